"""The word lists of the representation report: the shipped ones (``assets/lexicons``), a project's edited copies
(``lexicons`` rows) and files given for one report; how a list is read and how its terms are found in text.

A list is text: ``# comments``, ``[group]`` headings and terms (one a line or comma-separated). ``occupations`` and
``adjectives`` are *attribute* lists (terms counted beside the groups); every other list is a *category* whose
headings are its groups. See ``assets/lexicons/README.md`` for the matching rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from studio.store import Store
from studio.store.audit import record_action
from studio.store.projects import ensure_project, find_project
from studio.store.tables import Lexicon as LexiconRow

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "lexicons"
ATTRIBUTE_LISTS = ("occupations", "adjectives")
ORDER = ("gender", "age", "ethnicity", "religion", "disability", *ATTRIBUTE_LISTS)  # how reports list them
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
MAX_TERMS = 5000  # a list is read by people and edited in a text box; past this it is a data set, not a lexicon


class LexiconError(ValueError):
    """A list that cannot be used; the message names the list, the line and the reason."""


@dataclass(frozen=True)
class Lexicon:
    """One list read: ``groups`` maps each heading to its terms (as written)."""
    name: str
    groups: dict[str, list[str]]

    @property
    def is_attributes(self) -> bool:
        return self.name in ATTRIBUTE_LISTS


def check_name(name: str) -> str:
    given = (name or "").strip()
    name = given.lower()
    if not NAME.match(name):
        raise LexiconError(f"lexicon name '{given}': use lower-case letters, digits, '-' or '_' (up to 40), starting "
                           "with a letter, e.g. 'caste'")
    return name


def parse_lexicon(name: str, text: str) -> Lexicon:
    """``text`` read as list ``name``; terms before any heading form a group named after the list."""
    name = check_name(name)
    groups: dict[str, list[str]] = {}
    current = name
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or not line[1:-1].strip():
                raise LexiconError(f"lexicon '{name}' line {number}: a group heading is [name] (got {raw.strip()!r})")
            current = " ".join(line[1:-1].split()).lower()
            groups.setdefault(current, [])
            continue
        for term in (t.strip() for t in line.split(",")):
            if not term:
                continue
            if not re.search(r"\w", term):
                raise LexiconError(f"lexicon '{name}' line {number}: {term!r} has no letters or digits to find")
            groups.setdefault(current, []).append(term)
    groups = {group: terms for group, terms in groups.items() if terms}
    if not groups:
        raise LexiconError(f"lexicon '{name}' has no terms (write [group] headings and terms under them)")
    if sum(map(len, groups.values())) > MAX_TERMS:
        raise LexiconError(f"lexicon '{name}' has more than {MAX_TERMS} terms")
    return Lexicon(name, groups)


# ----------------------------------------------------------------------------- finding terms in text

def plural_forms(term: str) -> list[str]:
    """``term`` and its regular English plural(s), by its last word: -s, -es after s/x/z/ch/sh, -ies after a
    consonant and y, -men beside -mans (``policemen``, ``Germans``), ``people`` beside ``persons``."""
    head, _, last = term.rpartition(" ")
    lowered = last.lower()
    if lowered.endswith("person"):
        endings = [last + "s", last[:-6] + "people"]
    elif lowered.endswith("man"):
        endings = [last + "s", last[:-3] + "men"]
    elif lowered.endswith(("s", "x", "z", "ch", "sh")):
        endings = [last + "es"]
    elif len(lowered) > 1 and lowered.endswith("y") and lowered[-2] not in "aeiou":
        endings = [last[:-1] + "ies"]
    else:
        endings = [last + "s"]
    return [term] + [f"{head} {ending}".strip() for ending in endings]


def normal(text: str) -> str:
    """How a term and a match are compared: lower case, a hyphen or any run of spaces as one space."""
    return " ".join(re.split(r"[\s\-]+", text.lower())).strip()


Found = tuple[str, str, str]  # (list, group, term as written in the list)


class Matcher:
    """Finds the terms of several lists (and their plurals) in text, in one pass: whole words, any case, a space or
    hyphen alike, the longest term where terms overlap. A term inside a longer one of another list counts for both
    lists ("old woman": age and gender); inside a longer one of its own list it does not ("African American" is not
    also "American")."""

    def __init__(self, lexicons: list[Lexicon]):
        own: dict[str, set[Found]] = {}  # normal form → what it is in each list that holds it
        for lexicon in lexicons:
            for group, terms in lexicon.groups.items():
                for term in terms:
                    for form in plural_forms(" ".join(term.split())):
                        own.setdefault(normal(form), set()).add((lexicon.name, group, normal(term)))
        self.found: dict[str, tuple[Found, ...]] = {}
        for key, entries in own.items():
            lists = {name for name, _, _ in entries}
            words = key.split()
            inner = {entry for i in range(len(words)) for j in range(i + 1, len(words) + 1) if j - i < len(words)
                     for entry in own.get(" ".join(words[i:j]), ()) if entry[0] not in lists}
            self.found[key] = _one_per_group(key, entries | inner)
        # a trie of the forms as one pattern: at each place in the text the engine follows one branch per letter
        # instead of trying every term in turn (a flat alternation of a few hundred terms read ~2 MB/s)
        trie = _trie_pattern(self.found) if self.found else r"(?!)"  # no terms: a pattern that never matches
        self.pattern = re.compile(rf"(?<!\w){trie}(?!\w)")
        self.any_case = re.compile(rf"(?<!\w){trie}(?!\w)", re.IGNORECASE)

    def find(self, text: str):
        """``(start, found)`` for each term found in ``text``, in order; ``found``: (list, group, term) for each
        list the term is in."""
        lowered = text.lower()
        pattern = self.pattern
        if len(lowered) != len(text):  # a letter whose lower case is longer ("İ"): places would shift
            lowered, pattern = text, self.any_case
        for match in pattern.finditer(lowered):
            yield match.start(), self.found[normal(match.group(0))]


def _one_per_group(key: str, entries: set[Found]) -> tuple[Found, ...]:
    """One (list, group, term) per list and group: "women", listed and also the plural of "woman", is one mention,
    of the term written as found where the list has it."""
    chosen: dict[tuple[str, str], str] = {}
    for name, group, term in sorted(entries, key=lambda e: e[2] != key):
        chosen.setdefault((name, group), term)
    return tuple(sorted((name, group, term) for (name, group), term in chosen.items()))


def _trie_pattern(forms) -> str:
    """One regular expression matching exactly ``forms`` (lower case), the longest first; a space in a form matches
    any run of spaces and hyphens, and so does a hyphen."""
    trie: dict = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}
    return _node_pattern(trie)


def _node_pattern(node: dict) -> str:
    ends_here = "" in node
    branches = [(r"[\s\-]+" if char == " " else re.escape(char)) + _node_pattern(child)
                for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if ends_here else body


# ----------------------------------------------------------------------------- where the lists come from

def shipped_texts() -> dict[str, str]:
    """The lists shipped with the studio, by name."""
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(SHIPPED.glob("*.txt"))}


def project_texts(store: Store, project: str) -> dict[str, dict]:
    """Every list a report of ``project`` uses, by name: ``{"text", "edited"}`` (edited: the project's own copy)."""
    texts = {name: {"text": text, "edited": False} for name, text in shipped_texts().items()}
    with store.session() as session:
        owner = find_project(session, project)
        rows = session.scalars(select(LexiconRow).where(LexiconRow.project_id == owner.id)).all() if owner else []
        texts.update({row.name: {"text": row.text, "edited": True} for row in rows})
    return texts


def read_lexicon_file(path: str | Path) -> tuple[str, str]:
    """``--lexicon FILE``: (the list it replaces or adds, named by the file's stem; its text)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LexiconError(f"lexicon file '{path}' does not exist")
    try:
        return check_name(path.stem), path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LexiconError(f"lexicon file '{path}' is not UTF-8 text") from None


def load_lexicons(store: Store, project: str, files: list[str | Path] = ()) -> list[Lexicon]:
    """The lists of a report: shipped, replaced by the project's edited copies, replaced by ``files``."""
    texts = {name: entry["text"] for name, entry in project_texts(store, project).items()}
    texts.update(read_lexicon_file(path) for path in files)
    return [parse_lexicon(name, texts[name]) for name in sorted(texts, key=_listed_order)]


def _listed_order(name: str) -> tuple:
    """The shipped lists in ``ORDER``; one's own categories after them, then the attribute lists."""
    if name in ATTRIBUTE_LISTS:
        return (2, ORDER.index(name), name)
    return (0, ORDER.index(name), name) if name in ORDER else (1, 0, name)


def save_lexicon(store: Store, project: str, name: str, text: str, actor: str | None = None) -> Lexicon:
    """Stores ``text`` as ``project``'s list ``name`` (read first: a list that cannot be used is refused)."""
    lexicon = parse_lexicon(name, text)
    with store.session() as session:
        owner = ensure_project(session, project, actor)
        row = session.scalar(select(LexiconRow).where(LexiconRow.project_id == owner.id,
                                                      LexiconRow.name == lexicon.name))
        if row is None:
            session.add(LexiconRow(project_id=owner.id, name=lexicon.name, text=text, updated_by=actor))
        else:
            row.text, row.updated_by = text, actor
        record_action(session, actor, "lexicon.save", f"lexicon:{lexicon.name}", project=owner.name,
                      details={"groups": len(lexicon.groups), "terms": sum(map(len, lexicon.groups.values()))})
    return lexicon


def reset_lexicon(store: Store, project: str, name: str, actor: str | None = None) -> bool:
    """Drops ``project``'s copy of list ``name`` (the shipped one applies again); False when it had none."""
    name = check_name(name)
    with store.session() as session:
        owner = find_project(session, project)
        if owner is None:
            return False
        gone = session.execute(delete(LexiconRow).where(LexiconRow.project_id == owner.id,
                                                        LexiconRow.name == name)).rowcount
        if gone:
            record_action(session, actor, "lexicon.reset", f"lexicon:{name}", project=owner.name, details={})
    return bool(gone)


def purge_lexicons(session, project_id: int) -> None:
    """A deleted project's lists go with it."""
    session.execute(delete(LexiconRow).where(LexiconRow.project_id == project_id))
