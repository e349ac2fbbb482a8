"""Write capitals.jsonl: a small instruction set for examples/smollm2_lora.ft (no downloads).

    python examples/smollm2/make_data.py

Each row asks for a country's capital; the completion is the capital's name alone. The
instruct model knows most capitals but answers in a sentence ("The capital of France is
Paris."), so exact match is near 0 before training; a LoRA teaches the one-word format
on the train split and the held-out split measures it on countries it never saw.
"""

from __future__ import annotations

import json
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Egypt": "Cairo",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Peru": "Lima", "Chile": "Santiago", "Colombia": "Bogota", "Venezuela": "Caracas", "Cuba": "Havana",
    "Kenya": "Nairobi", "Nigeria": "Abuja", "Ghana": "Accra", "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat", "Tunisia": "Tunis", "Algeria": "Algiers", "Greece": "Athens", "Turkey": "Ankara",
    "Iran": "Tehran", "Iraq": "Baghdad", "Israel": "Jerusalem", "Jordan": "Amman", "Lebanon": "Beirut",
    "Syria": "Damascus", "Saudi Arabia": "Riyadh", "Qatar": "Doha", "Pakistan": "Islamabad",
    "Afghanistan": "Kabul", "Nepal": "Kathmandu", "Bangladesh": "Dhaka", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Malaysia": "Kuala Lumpur", "Philippines": "Manila",
    "South Korea": "Seoul", "North Korea": "Pyongyang", "Mongolia": "Ulaanbaatar", "Australia": "Canberra",
    "New Zealand": "Wellington", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Iceland": "Reykjavik", "Ireland": "Dublin", "United Kingdom": "London",
    "Netherlands": "Amsterdam", "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern",
    "Poland": "Warsaw", "Czech Republic": "Prague", "Hungary": "Budapest", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Ukraine": "Kyiv",
    "Belarus": "Minsk", "Lithuania": "Vilnius", "Latvia": "Riga", "Estonia": "Tallinn",
    "Georgia": "Tbilisi", "Armenia": "Yerevan", "Uzbekistan": "Tashkent", "Kazakhstan": "Astana",
    "Sri Lanka": "Colombo", "Singapore": "Singapore", "Uganda": "Kampala", "Senegal": "Dakar",
    "Zimbabwe": "Harare", "Zambia": "Lusaka", "Angola": "Luanda", "Sudan": "Khartoum",
}


def main() -> None:
    out = Path(__file__).resolve().parent / "capitals.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for country, capital in CAPITALS.items():
            f.write(json.dumps({"prompt": f"What is the capital of {country}?", "completion": capital}) + "\n")
    print(f"{out}: {len(CAPITALS)} rows")


if __name__ == "__main__":
    main()
