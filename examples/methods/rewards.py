"""Python rewards for the online methods in methods.ft."""


def cats(prompts, completions, completion, **columns):
    """Share of the word "cat" in a completion; `completion` is the data's reference column."""
    assert len(prompts) == len(completions) == len(completion)
    assert all(p.startswith("Reverse: ") for p in prompts)  # prompts as written, untemplated
    return [sum(w == "cat" for w in c.split()) / max(len(c.split()), 1) for c in completions]
