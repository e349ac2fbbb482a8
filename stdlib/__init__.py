"""ftlang.stdlib."""
