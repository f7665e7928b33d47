"""A small plain-text corpus with structure a tiny model can learn: short templated stories.

Each story is one paragraph (the importer splits a single ``.txt`` file on blank lines, so each story
becomes one document). The vocabulary is a few hundred words; the stories follow a fixed plot with
optional sentences, names come back within a story and pronouns agree with them, so a model can do
much better than word frequencies. Deterministic for a seed.

    python -m studio.examples.text assets/examples/stories.txt
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

NAMES = {  # name → pronoun
    "Mia": "she", "Leo": "he", "Ava": "she", "Sam": "he", "Tom": "he", "Lily": "she", "Max": "he", "Zoe": "she",
    "Ben": "he", "Emma": "she", "Finn": "he", "Ruby": "she", "Jack": "he", "Nora": "she", "Owen": "he",
    "Ella": "she", "Luke": "he", "Rosa": "she", "Theo": "he", "Ivy": "she", "Noah": "he", "Cora": "she",
    "Eli": "he", "Maya": "she", "Hugo": "he", "June": "she", "Oscar": "he", "Lucy": "she", "Adam": "he",
    "Iris": "she", "Milo": "he", "Stella": "she", "Felix": "he", "Hazel": "she", "Oliver": "he",
    "Grace": "she", "Rory": "he", "Daisy": "she", "Jonah": "he", "Alice": "she",
}
ANIMALS = {  # singular → plural
    "cat": "cats", "dog": "dogs", "rabbit": "rabbits", "fox": "foxes", "owl": "owls", "bear": "bears",
    "mouse": "mice", "duck": "ducks", "frog": "frogs", "horse": "horses", "pig": "pigs", "goat": "goats",
    "lamb": "lambs", "hen": "hens", "turtle": "turtles", "squirrel": "squirrels", "deer": "deer",
    "hedgehog": "hedgehogs", "badger": "badgers", "otter": "otters", "crow": "crows", "bee": "bees",
    "puppy": "puppies", "kitten": "kittens", "pony": "ponies", "goose": "geese", "robin": "robins",
    "mole": "moles", "wolf": "wolves", "seal": "seals",
}
ADJECTIVES = ["little", "big", "happy", "brave", "shy", "kind", "clever", "sleepy", "funny", "quiet", "tiny",
              "curious", "gentle", "silly", "proud", "busy", "friendly", "grumpy", "lazy", "fast", "young", "old",
              "fluffy", "cheerful", "careful", "playful", "polite", "noisy", "calm", "bold", "smart", "wise",
              "lucky", "hungry", "small", "tall", "strong", "soft", "sweet", "wild"]
COLORS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "white", "black", "gray", "golden"]
PLACES = ["forest", "garden", "village", "farm", "meadow", "town", "castle", "valley", "beach", "river", "hill",
          "park", "school", "market", "lake", "pond", "mountain", "field", "harbor", "library", "bakery", "zoo",
          "island", "cave", "orchard", "bridge", "station", "playground", "barn", "woods"]
OBJECTS = ["ball", "kite", "book", "hat", "box", "drum", "boat", "bell", "key", "map", "cup", "basket", "lamp",
           "shell", "stone", "feather", "flower", "ribbon", "scarf", "wagon", "whistle", "blanket", "jar", "coin",
           "ring", "rope", "spoon", "sock", "button", "candle", "letter", "compass", "umbrella", "kettle", "brush",
           "crayon", "marble", "puzzle", "balloon", "leaf"]
FOODS = ["apples", "cake", "bread", "soup", "cookies", "pie", "honey", "carrots", "cheese", "berries", "pears",
         "plums", "muffins", "pancakes", "grapes", "nuts", "rice", "jam", "corn", "peas"]
PLAYS = ["play", "sing", "dance", "run", "read", "swim", "climb", "paint", "jump", "explore", "draw", "skip",
         "hop", "build", "bake", "fish", "hide", "race", "whistle", "laugh"]
FEELINGS = ["happy", "sad", "scared", "excited", "tired", "surprised", "worried", "glad", "proud", "nervous",
            "puzzled", "thankful"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "snowy", "foggy", "cloudy", "bright", "stormy"]
TIMES = ["morning", "afternoon", "evening"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]
MORALS = ["friends make everything better", "sharing is kind", "being brave is worth it",
          "it is good to ask for help", "small things can matter a lot", "patience brings good things",
          "every day is a new adventure", "kind words help everyone"]
POSSESSIVE = {"he": "his", "she": "her"}
OBJECTIVE = {"he": "him", "she": "her"}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def make_story(rng: random.Random) -> str:
    name, friend = rng.sample(sorted(NAMES), 2)
    he, friend_he = NAMES[name], NAMES[friend]
    his = POSSESSIVE[he]
    animal, friend_animal, seen = rng.sample(sorted(ANIMALS), 3)
    adjective, place, other_place = rng.choice(ADJECTIVES), rng.choice(PLACES), rng.choice(PLACES)
    thing, color, food = rng.choice(OBJECTS), rng.choice(COLORS), rng.choice(FOODS)
    play, feeling, weather = rng.choice(PLAYS), rng.choice(FEELINGS), rng.choice(WEATHER)
    time, later = rng.sample(TIMES, 2)
    sentences = [rng.choice([
        f"Once upon a time, there was {_a(adjective)} {animal} named {name}.",
        f"There once lived {_a(adjective)} {animal} called {name}.",
        f"{name} was {_a(adjective)} {animal}.",
    ])]
    sentences.append(rng.choice([
        f"{he.capitalize()} lived in {_a(color)} house near the {place}.",
        f"{he.capitalize()} lived with {his} family by the {place}.",
        f"{name} lived in the {place}.",
    ]))
    if rng.random() < 0.8:
        sentences.append(f"Every {time}, {name} liked to {play} with {his} friend {friend} the {friend_animal}.")
    sentences.append(rng.choice([
        f"One {weather} day, {name} found {_a(color)} {thing} near the {place}.",
        f"One {weather} {time}, {name} lost {his} {color} {thing}.",
        f"One {weather} day, {friend} gave {name} {_a(color)} {thing}.",
    ]))
    sentences.append(f"{name} felt very {feeling}.")
    if rng.random() < 0.7:
        sentences.append(f"{he.capitalize()} said to {friend}, \"Let us take the {thing} to the {other_place}!\"")
        sentences.append(f"So {name} and {friend} went to the {other_place} together.")
        if rng.random() < 0.6:
            sentences.append(f"On the way, they saw {rng.choice(NUMBERS)} {ANIMALS[seen]} eating {food}.")
    sentences.append(rng.choice([
        f"They shared some {food} and played until the {later}.",
        f"{friend} smiled at {name}, and {friend_he} said thank you.",
        f"They sat by the {other_place} and ate {food} until the {later}.",
    ]))
    if rng.random() < 0.5:
        sentences.append(f"That night, {name} went home and fell asleep with {his} {thing}.")
    sentences.append(f"{name} learned that {rng.choice(MORALS)}.")
    return " ".join(sentences)


def make_corpus(path: str | Path | None = None, size_kb: float = 100, seed: int = 0) -> str:
    """About ``size_kb`` KiB of stories, one paragraph each, separated by blank lines; written to ``path``
    (UTF-8) when given. The same seed gives the same text."""
    rng = random.Random(seed)
    stories: list[str] = []
    size, limit = 0, int(size_kb * 1024)
    while size < limit:
        stories.append(make_story(rng))
        size += len(stories[-1]) + 2
    text = "\n\n".join(stories) + "\n"
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text


def vocabulary(text: str) -> set[str]:
    """The lower-cased words of ``text``."""
    return set(re.findall(r"[a-z]+", text.lower()))


if __name__ == "__main__":
    make_corpus(sys.argv[1] if len(sys.argv) > 1 else "assets/examples/stories.txt")
