"""Unit tests for the text cleaning steps and for running them (studio.data.steps.text, studio.data.clean)."""

from __future__ import annotations

import copy
import random
import re

import pytest

from studio.data.clean import (EXAMPLES_PER_STEP, StepsConfigError, default_config, resolve_config,
                               run_cleaning)
from studio.data.items import Item
from studio.data.steps import STEPS
from studio.data.steps.base import StepContext
from studio.data.steps.text import (LengthParams, NearDuplicateTextParams, NormaliseParams, PiiParams,
                                    WhitespaceParams, count_tokens, exact_text_duplicates, fix_encoding,
                                    length_bounds, may_be_mojibake, near_text_duplicates, normalise_unicode,
                                    scrub_pii, tidy_whitespace)

TEXT_STEP_NAMES = ["fix_encoding", "normalize_unicode", "whitespace", "pii", "length", "exact_duplicates",
                   "near_duplicates"]

# A long paragraph, a lightly edited copy of it, and a distinct paragraph on the same topic.
PARAGRAPH = ("The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a small brass lamp "
             "and a notebook in which he recorded the weather, the passing ships and the colour of the sea. "
             "Over forty years he filled more than two hundred notebooks, and the village museum now keeps them "
             "in a glass cabinet beside the old foghorn, where visitors can read his careful handwriting and "
             "imagine the long winter nights he spent alone above the rocks.")
EDITED_PARAGRAPH = PARAGRAPH.replace("every evening", "each evening").replace("small brass", "little brass")
SAME_TOPIC = ("Lighthouses along the northern coast were automated in the nineteen eighties, and most keepers "
              "moved inland to work in harbours, ferries or coastguard stations. Some towers became holiday "
              "cottages, others were left to the gulls, and a few now host small museums about maritime history "
              "and the families who once lived in them through storms and calm alike.")
OTHER_TOPIC = ("Sourdough bread needs a lively starter, a long cold fermentation in the refrigerator and a very "
               "hot oven; bakers score the loaf just before it goes in so that the crust opens along a clean "
               "line instead of tearing at random while the steam escapes during the first twenty minutes.")


@pytest.fixture
def ctx(tmp_path) -> StepContext:
    return StepContext(modality="text", scratch=tmp_path / "scratch")


def another_import(ctx: StepContext) -> StepContext:
    """A context of its own: a step remembers what it saw (counts, seen texts, the index) for one import."""
    return StepContext(modality=ctx.modality, scratch=ctx.scratch)


def texts(*values: str) -> list[Item]:
    return [Item(source=f"doc{n}.txt", text=value) for n, value in enumerate(values)]


def sources(items: list[Item]) -> list[str]:
    return [item.source for item in items]


# --------------------------------------------------------------------------------------------------
# fix_encoding


@pytest.mark.parametrize("broken, fixed", [
    ("cafÃ©", "café"),
    ("crÃ¨me brÃ»lÃ©e", "crème brûlée"),
    ("Ã¼ber naïve", "über naïve"),
    ("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.", "The Mona Lisa doesn’t have eyebrows."),
])
def test_fix_encoding_repairs_mojibake(ctx, broken, fixed):
    items = texts(broken)
    outcome = fix_encoding(items, None, ctx)
    assert items[0].text == fixed
    assert outcome.kept == items and outcome.removed == []
    assert [(before, after) for _, before, after in outcome.changed] == [(broken, fixed)]


@pytest.mark.parametrize("correct", [
    "café, naïve, Zürich, Ελληνικά, 日本語",
    "He said “hello” — it’s fine.",  # curly quotes are correct text, not mojibake
    "AT&amp;T and x &lt; y in an HTML snippet",  # entities are content, not an encoding error
    "ﬁne ＡＢＣ１２３",  # compatibility characters are normalize_unicode's business, not this step's
    "line one\r\nline two",
    "plain ASCII text",
])
def test_fix_encoding_leaves_correct_text_untouched(ctx, correct):
    items = texts(correct)
    outcome = fix_encoding(items, None, ctx)
    assert items[0].text == correct
    assert outcome.changed == []


def test_the_quick_mojibake_check_answers_as_ftfy_does():
    """may_be_mojibake searches ftfy's pattern only around non-ASCII characters: on random strings dense in the
    characters the pattern is made of (and on real mojibake), it says what ftfy.badness.is_bad says."""
    from ftfy.badness import is_bad

    rng = random.Random(0)
    pieces = list("aAzZ .,!?-'\"\n\t0123456789") + list("ÃÂÎÐØÙ€œŠš¢£Ÿž\xa0\xad®©°·»–—´²³×àµ¹¼½¾√±∂†≠™≤≥¥ø≈‚Äìîïòôúùûπâóäê") \
        + list("вЂГўВРСΒΓΞΟβΆāéèüñçÉÑ“”‘’…•│┌█░\x85\x9d") + ["ГўВЂВ", "Ã©", "â€™", "Ã ", "Â "]
    answers = {True: 0, False: 0}
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        assert may_be_mojibake(text) == is_bad(text), repr(text)
        answers[is_bad(text)] += 1
    assert min(answers.values()) > 2_000  # both answers well represented
    for text in ("cafÃ©", "Ã ", "doesnÃ¢â‚¬â„¢t", "a" * 50 + "ГўВЂВ™s", "He said “hello” — it’s fine.", "plain"):
        assert may_be_mojibake(text) == is_bad(text)


def test_fix_encoding_repairs_every_field_of_pairs_and_chats(ctx):
    pair = Item(source="p", prompt="Wo ist das CafÃ©?", response="GegenÃ¼ber")
    chat = Item(source="c", messages=[{"role": "user", "content": "cafÃ©"},
                                      {"role": "assistant", "content": "café"}])
    outcome = fix_encoding([pair, chat], None, ctx)
    assert (pair.prompt, pair.response) == ("Wo ist das Café?", "Gegenüber")
    assert [m["content"] for m in chat.messages] == ["café", "café"]
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]
    assert len(outcome.changed) == 2


# --------------------------------------------------------------------------------------------------
# normalize_unicode


def test_nfkc_folds_ligatures_and_full_width_characters(ctx):
    items = texts("ﬁnd the ﬂag", "Room １２３ on ＦＬＯＯＲ ２", "already normal text")
    outcome = normalise_unicode(items, NormaliseParams(), ctx)
    assert [item.text for item in items] == ["find the flag", "Room 123 on FLOOR 2", "already normal text"]
    assert sources(item for item, _, _ in outcome.changed) == ["doc0.txt", "doc1.txt"]


def test_nfc_composes_but_keeps_compatibility_characters(ctx):
    decomposed = "cafe\u0301 ﬁ １"
    items = texts(decomposed)
    normalise_unicode(items, NormaliseParams(form="NFC"), ctx)
    assert items[0].text == "caf\u00e9 ﬁ １"


def test_normalize_params_reject_unknown_form():
    with pytest.raises(StepsConfigError, match="normalize_unicode"):
        resolve_config("text", {"normalize_unicode": {"form": "NFD"}})


# --------------------------------------------------------------------------------------------------
# whitespace


def test_whitespace_collapses_runs_and_blank_lines(ctx):
    items = texts("  Hello    world\t\tagain\u00a0\u00a0now  \n\n\n\n\nNext   paragraph  \n   \n  \n  tail ")
    tidy_whitespace(items, WhitespaceParams(), ctx)
    assert items[0].text == "Hello world again now\n\nNext paragraph\n\ntail"


def test_whitespace_keeps_single_line_breaks_and_one_blank_line(ctx):
    kept = "First line\nSecond line\n\nNew paragraph"
    items = texts(kept)
    outcome = tidy_whitespace(items, WhitespaceParams(), ctx)
    assert items[0].text == kept
    assert outcome.changed == []


def test_whitespace_without_newlines_joins_everything_on_one_line(ctx):
    items = texts("First line\nSecond   line\n\n\nThird\tline ")
    tidy_whitespace(items, WhitespaceParams(keep_newlines=False), ctx)
    assert items[0].text == "First line Second line Third line"


# --------------------------------------------------------------------------------------------------
# pii


def _scrub_one(ctx, text: str, **params) -> tuple[str, str]:
    items = texts(text)
    outcome = scrub_pii(items, PiiParams(**params), another_import(ctx))
    return items[0].text, outcome.detail


def _counts(detail: str) -> tuple[int, int]:
    match = re.fullmatch(r"replaced (\d+) email address\(es\) and (\d+) phone number\(s\)", detail)
    assert match, detail
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("text, expected", [
    ("Write to jane.doe+news@example.co.uk today", "Write to [EMAIL] today"),
    ("Write to jane@example.com.", "Write to [EMAIL]."),
    ("Call +44 20 7946 0958 now", "Call [PHONE] now"),
    ("Call (555) 123-4567 now", "Call [PHONE] now"),
    ("Call 555-123-4567 or 555.123.4567", "Call [PHONE] or [PHONE]"),
    ("Call +1-800-555-0199", "Call [PHONE]"),
    # a number at the end of a sentence is still a phone number
    ("You can reach me at (555) 123-4567.", "You can reach me at [PHONE]."),
    ("Our London office: +44 20 7946 0958.", "Our London office: [PHONE]."),
])
def test_pii_replaces_emails_and_phone_numbers(ctx, text, expected):
    scrubbed, _ = _scrub_one(ctx, text)
    assert scrubbed == expected


@pytest.mark.parametrize("text", [
    "We met on 2024-01-15 and again on 2024-02-20.",
    "The meeting is on 2024-01-15 14:00 in room 4.",  # a timestamp is not a phone number
    "On 2024-01-15 3 people came.",
    "In 1999 and 2024 the results were different; the range 2019-2024 too.",
    "The server 192.168.100.200 is up; so is 10.0.0.1.",
    "Ping the gateway (192.168.100.200) first.",
    "It costs $1,299.99, or 1.299,00 EUR, or $1,234,567.89 for the lot.",
    "Upgrade from version 1.2.3 to 3.11.4 or v2.10.3-rc1 (build 1.2.3.4567).",
    "Order id 123456789012 and commit 1234567890.",
    "Meet between 10:30 and 12:45 on 15/01/2024.",
])
def test_pii_leaves_dates_years_ips_prices_and_versions_alone(ctx, text):
    scrubbed, detail = _scrub_one(ctx, text)
    assert scrubbed == text
    assert _counts(detail) == (0, 0)


def test_pii_phone_at_line_end_does_not_swallow_the_next_line(ctx):
    text = "Call 555-123-4567\n2024 was busy\n2. Bring the forms"
    scrubbed, detail = _scrub_one(ctx, text)
    assert scrubbed == "Call [PHONE]\n2024 was busy\n2. Bring the forms"
    assert _counts(detail) == (0, 1)


def test_pii_counts_replacements_across_items_in_the_detail(ctx):
    items = texts("mail a@example.com or b@example.org", "phone +44 20 7946 0958", "ring (555) 123-4567 on 2024-01-15",
                  "nothing personal here")
    outcome = scrub_pii(items, PiiParams(), ctx)
    assert _counts(outcome.detail) == (2, 2)
    assert sources(item for item, _, _ in outcome.changed) == ["doc0.txt", "doc1.txt", "doc2.txt"]
    assert items[3].text == "nothing personal here"
    assert outcome.kept == items and outcome.removed == []


def test_pii_switches_and_masks(ctx):
    text = "a@example.com and (555) 123-4567"
    assert _scrub_one(ctx, text, emails=False)[0] == "a@example.com and [PHONE]"
    assert _scrub_one(ctx, text, phones=False)[0] == "[EMAIL] and (555) 123-4567"
    assert _scrub_one(ctx, text, email_mask="<e>", phone_mask="<p>")[0] == "<e> and <p>"
    assert _counts(_scrub_one(ctx, text, emails=False)[1]) == (0, 1)


def test_pii_scrubs_prompts_responses_and_messages(ctx):
    pair = Item(source="p", prompt="My mail is x@example.com", response="Noted, x@example.com")
    chat = Item(source="c", messages=[{"role": "user", "content": "call me on (555) 123-4567"}])
    outcome = scrub_pii([pair, chat], PiiParams(), ctx)
    assert (pair.prompt, pair.response) == ("My mail is [EMAIL]", "Noted, [EMAIL]")
    assert chat.messages[0]["content"] == "call me on [PHONE]"
    assert _counts(outcome.detail) == (2, 1)


def test_pii_is_off_by_default(tmp_path):
    assert default_config("text")["pii"]["enabled"] is False
    items = texts("write to someone@example.com please", "or call (555) 123-4567 today")
    kept, report = run_cleaning(items, "text", None, tmp_path / "s", tmp_path / "v" / "removed")
    assert [item.text for item in kept] == ["write to someone@example.com please", "or call (555) 123-4567 today"]
    entry = next(e for e in report if e["step"] == "pii")
    assert entry["enabled"] is False and entry["changed"] == 0 and entry["detail"] == ""


def test_pii_runs_when_enabled_in_the_pipeline(tmp_path):
    items = texts("write to someone@example.com please")
    kept, report = run_cleaning(items, "text", {"pii": {"enabled": True}}, tmp_path / "s", tmp_path / "v" / "r")
    assert kept[0].text == "write to [EMAIL] please"
    entry = next(e for e in report if e["step"] == "pii")
    assert entry["changed"] == 1 and _counts(entry["detail"]) == (1, 0)


# --------------------------------------------------------------------------------------------------
# length


def test_count_tokens_counts_words_and_punctuation():
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0
    assert count_tokens("one two  three") == 3


def test_length_in_tokens_min_and_max(ctx):
    items = texts("Hi", "Hi there", "one two three four five", "one two three four five six")
    outcome = length_bounds(items, LengthParams(unit="tokens", min_length=2, max_length=5), ctx)
    assert sources(outcome.kept) == ["doc1.txt", "doc2.txt"]
    assert [(item.source, reason) for item, reason in outcome.removed] == [
        ("doc0.txt", "too short: 1 tokens (minimum 2)"),
        ("doc3.txt", "too long: 6 tokens (maximum 5)"),
    ]


def test_length_in_characters_min_and_max(ctx):
    items = texts("abcd", "abcde", "abcdefghij", "abcdefghijk")
    outcome = length_bounds(items, LengthParams(unit="characters", min_length=5, max_length=10), ctx)
    assert sources(outcome.kept) == ["doc1.txt", "doc2.txt"]
    assert [reason for _, reason in outcome.removed] == [
        "too short: 4 characters (minimum 5)", "too long: 11 characters (maximum 10)"]


def test_length_of_a_pair_is_the_length_of_its_response(ctx):
    long_prompt = " ".join(["word"] * 50)
    short_answer = Item(source="short", prompt=long_prompt, response="Yes")
    good_answer = Item(source="good", prompt="Why?", response="Because the sky scatters blue light more.")
    too_long = Item(source="long", prompt="Hi", response=" ".join(["word"] * 21))
    outcome = length_bounds([short_answer, good_answer, too_long],
                            LengthParams(min_length=3, max_length=20), ctx)
    assert sources(outcome.kept) == ["good"]
    assert dict((item.source, reason) for item, reason in outcome.removed) == {
        "short": "too short: 1 tokens (minimum 3)", "long": "too long: 21 tokens (maximum 20)"}


def test_length_of_a_chat_is_all_of_its_messages(ctx):
    chat = Item(source="chat", messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    # "user: hi\nassistant: hello" → user : hi assistant : hello = 6 tokens
    assert sources(length_bounds([chat], LengthParams(min_length=6), ctx).kept) == ["chat"]
    assert sources(length_bounds([chat], LengthParams(min_length=7), ctx).kept) == []


def test_length_params_are_validated():
    with pytest.raises(StepsConfigError, match=r"cleaning step 'length'.*unit"):
        resolve_config("text", {"length": {"unit": "words"}})
    with pytest.raises(StepsConfigError, match=r"min length \(min_length\): must be a whole number at least 0"):
        resolve_config("text", {"length": {"min_length": -1}})


# --------------------------------------------------------------------------------------------------
# exact duplicates


def test_exact_duplicates_keep_the_first_and_name_it(ctx):
    items = [Item(source="a.txt", text="the same words"), Item(source="b.txt", text="other words"),
             Item(source="c.txt", text="the same words"), Item(source="d.txt", text="the same words.")]
    outcome = exact_text_duplicates(items, None, ctx)
    assert sources(outcome.kept) == ["a.txt", "b.txt", "d.txt"]
    assert [(item.source, reason) for item, reason in outcome.removed] == [("c.txt", "exact duplicate of a.txt")]


def test_exact_duplicates_compare_pairs_and_chats_by_all_their_words(ctx):
    items = [Item(source="p1", prompt="What is 2+2?", response="4"),
             Item(source="p2", prompt="What is 2+2?", response="Four"),
             Item(source="p3", prompt="What is 2+2?", response="4"),
             Item(source="t1", text="What is 2+2?\n4"),  # same words as p1, but a plain text is another format
             Item(source="c1", messages=[{"role": "user", "content": "hi"}]),
             Item(source="c2", messages=[{"role": "user", "content": "hi"}])]
    outcome = exact_text_duplicates(items, None, ctx)
    assert sources(outcome.kept) == ["p1", "p2", "t1", "c1"]
    assert [(item.source, reason) for item, reason in outcome.removed] == [
        ("p3", "exact duplicate of p1"), ("c2", "exact duplicate of c1")]


# --------------------------------------------------------------------------------------------------
# near duplicates


def test_near_duplicates_remove_a_lightly_edited_copy(ctx):
    items = [Item(source="original.txt", text=PARAGRAPH), Item(source="same_topic.txt", text=SAME_TOPIC),
             Item(source="edited.txt", text=EDITED_PARAGRAPH), Item(source="bread.txt", text=OTHER_TOPIC)]
    outcome = near_text_duplicates(items, NearDuplicateTextParams(), ctx)
    assert sources(outcome.kept) == ["original.txt", "same_topic.txt", "bread.txt"]
    assert len(outcome.removed) == 1
    item, reason = outcome.removed[0]
    assert item.source == "edited.txt"
    assert reason.startswith("near-duplicate of original.txt (similarity ")
    similarity = float(re.search(r"similarity ([\d.]+)\)", reason).group(1))
    assert 0.8 <= similarity < 1.0


def test_near_duplicates_keep_distinct_texts_on_the_same_topic(ctx):
    items = [Item(source="keeper.txt", text=PARAGRAPH), Item(source="automation.txt", text=SAME_TOPIC)]
    outcome = near_text_duplicates(items, NearDuplicateTextParams(), ctx)
    assert sources(outcome.kept) == ["keeper.txt", "automation.txt"]
    assert outcome.removed == []


@pytest.mark.parametrize("num_perm", [16, 64, 256])
@pytest.mark.parametrize("threshold", [0.9, 0.97, 1.0])
def test_near_duplicates_accept_every_allowed_high_threshold(ctx, threshold, num_perm):
    # the params model allows up to 1.0; datasketch alone refuses such thresholds (fewer than 2 bands)
    items = [Item(source="a", text=PARAGRAPH), Item(source="b", text=EDITED_PARAGRAPH),
             Item(source="c", text=PARAGRAPH)]
    outcome = near_text_duplicates(items, NearDuplicateTextParams(threshold=threshold, num_perm=num_perm), ctx)
    # the exact copy is found at any threshold; the edited one is not identical, so 1.0 keeps it
    removed = {item.source: reason for item, reason in outcome.removed}
    assert removed["c"] == "near-duplicate of a (similarity 1.00)"
    if threshold == 1.0:
        assert sources(outcome.kept) == ["a", "b"]


def test_near_duplicates_threshold_decides(ctx):
    items = [Item(source="a", text=PARAGRAPH), Item(source="b", text=EDITED_PARAGRAPH)]
    strict = near_text_duplicates(copy.deepcopy(items), NearDuplicateTextParams(threshold=0.95), another_import(ctx))
    assert sources(strict.kept) == ["a", "b"]
    loose = near_text_duplicates(copy.deepcopy(items), NearDuplicateTextParams(threshold=0.5), another_import(ctx))
    assert sources(loose.kept) == ["a"]


def test_near_duplicates_are_deterministic(ctx):
    corpus = [PARAGRAPH, SAME_TOPIC, EDITED_PARAGRAPH, OTHER_TOPIC,
              OTHER_TOPIC.replace("very hot", "really hot"), PARAGRAPH.replace("forty", "fifty")]

    def run():
        items = [Item(source=f"{n}.txt", text=text) for n, text in enumerate(corpus)]
        outcome = near_text_duplicates(items, NearDuplicateTextParams(), another_import(ctx))
        return sources(outcome.kept), [(item.source, reason) for item, reason in outcome.removed]

    first, second = run(), run()
    assert first == second
    assert first[0] == ["0.txt", "1.txt", "3.txt"]


def test_near_duplicates_handle_empty_and_tiny_inputs(ctx):
    assert near_text_duplicates([], NearDuplicateTextParams(), ctx).kept == []
    items = texts("hi", "hello there", "hi")
    outcome = near_text_duplicates(items, NearDuplicateTextParams(), ctx)
    assert sources(outcome.kept) == ["doc0.txt", "doc1.txt"]


def test_near_duplicate_params_are_validated():
    with pytest.raises(StepsConfigError, match=r"near_duplicates.*threshold"):
        resolve_config("text", {"near_duplicates": {"threshold": 0.1}})
    with pytest.raises(StepsConfigError, match=r"num_perm"):
        resolve_config("text", {"near_duplicates": {"num_perm": 4}})


# --------------------------------------------------------------------------------------------------
# run_cleaning / resolve_config


def test_text_steps_run_in_the_documented_order():
    assert [step.name for step in STEPS["text"]] == TEXT_STEP_NAMES
    assert [step.name for step, _, _ in resolve_config("text", None)] == TEXT_STEP_NAMES


def test_default_config_lists_every_step_with_its_params():
    config = default_config("text")
    assert list(config) == TEXT_STEP_NAMES
    assert config["length"] == {"enabled": True, "unit": "tokens", "min_length": 2, "max_length": 100_000}
    assert config["near_duplicates"]["enabled"] is True
    resolve_config("text", config)  # what default_config gives is accepted back


def test_unknown_step_is_a_clear_error():
    with pytest.raises(StepsConfigError) as error:
        resolve_config("text", {"dedupe": {"enabled": True}, "whitespace": {}})
    message = str(error.value)
    assert "unknown text cleaning step(s): dedupe" in message
    assert "Known: " + ", ".join(TEXT_STEP_NAMES) in message


def test_invalid_params_are_a_clear_error():
    with pytest.raises(StepsConfigError) as error:
        resolve_config("text", {"whitespace": {"keep_newlines": "sometimes"}})
    assert "cleaning step 'whitespace'" in str(error.value)
    assert "keep newlines (keep_newlines): must be true or false" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_disabled_steps_do_nothing_but_are_reported(tmp_path):
    items = texts("Hello    world", "Hello    world", "x")
    config = {name: {"enabled": False} for name in TEXT_STEP_NAMES}
    kept, report = run_cleaning(items, "text", config, tmp_path / "s", tmp_path / "v" / "removed")
    assert [item.text for item in kept] == ["Hello    world", "Hello    world", "x"]
    assert [entry["step"] for entry in report] == TEXT_STEP_NAMES
    for entry in report:
        assert entry["enabled"] is False
        assert (entry["removed"], entry["changed"], entry["examples"]) == (0, 0, [])
        assert entry["params"] == {k: v for k, v in default_config("text")[entry["step"]].items() if k != "enabled"}


def test_only_the_disabled_step_is_skipped(tmp_path):
    items = texts("Hello    world", "Hello world", "x")
    kept, report = run_cleaning(items, "text", {"length": {"enabled": False}}, tmp_path / "s", tmp_path / "v" / "r")
    # whitespace runs before exact_duplicates, so the two greetings become the same text
    assert [item.text for item in kept] == ["Hello world", "x"]
    by_step = {entry["step"]: entry for entry in report}
    assert by_step["length"]["enabled"] is False and by_step["length"]["removed"] == 0
    assert by_step["whitespace"]["changed"] == 1
    assert by_step["exact_duplicates"]["removed"] == 1


def test_report_examples_hold_source_reason_and_a_text_snippet(tmp_path):
    long_text = "word " * 200
    items = [Item(source="keep.txt", text="a perfectly fine sentence"), Item(source="tiny.txt", text="x"),
             Item(source="big.txt", text=long_text)]
    config = {"length": {"max_length": 100}}
    kept, report = run_cleaning(items, "text", config, tmp_path / "s", tmp_path / "v" / "removed")
    assert sources(kept) == ["keep.txt"]
    entry = next(e for e in report if e["step"] == "length")
    assert entry["removed"] == 2
    assert entry["examples"] == [
        {"source": "tiny.txt", "reason": "too short: 1 tokens (minimum 2)", "text": "x"},
        {"source": "big.txt", "reason": "too long: 200 tokens (maximum 100)", "text": long_text.strip()[:300]},
    ]
    assert len(entry["examples"][1]["text"]) == 300
    assert not (tmp_path / "v" / "removed").exists()  # text examples live in the report, not in files


def test_report_keeps_a_few_examples_but_counts_all(tmp_path):
    items = [Item(source=f"{n}.txt", text="same text here") for n in range(EXAMPLES_PER_STEP + 4)]
    kept, report = run_cleaning(items, "text", None, tmp_path / "s", tmp_path / "v" / "r")
    assert sources(kept) == ["0.txt"]
    entry = next(e for e in report if e["step"] == "exact_duplicates")
    assert entry["removed"] == EXAMPLES_PER_STEP + 3
    assert len(entry["examples"]) == EXAMPLES_PER_STEP
    assert all(e["reason"] == "exact duplicate of 0.txt" for e in entry["examples"])


def test_report_changed_examples_show_before_and_after(tmp_path):
    items = texts("cafÃ© au lait", "already fine text")
    _, report = run_cleaning(items, "text", None, tmp_path / "s", tmp_path / "v" / "r")
    entry = next(e for e in report if e["step"] == "fix_encoding")
    assert entry["changed"] == 1
    assert entry["changed_examples"] == [{"source": "doc0.txt", "before": "cafÃ© au lait", "after": "café au lait"}]


def test_run_cleaning_reports_progress_and_handles_no_items(tmp_path):
    calls = []
    kept, report = run_cleaning([], "text", None, tmp_path / "s", tmp_path / "v" / "r",
                                progress=lambda fraction, message: calls.append((fraction, message)))
    assert kept == []
    assert len(report) == len(TEXT_STEP_NAMES)
    assert all(entry["removed"] == 0 for entry in report)
    assert [fraction for fraction, _ in calls] == [n / len(TEXT_STEP_NAMES) for n in range(len(TEXT_STEP_NAMES))]
    assert calls[0][1] == "Repair encoding (0 items)"


def test_only_a_step_that_removes_most_of_what_it_was_given_is_warned_about(tmp_path):
    from studio.data.clean import removal_warnings

    config = {"length": {"min_length": 4}, "near_duplicates": {"enabled": False}}
    # length removes 2 of 4 (half: not most); exact duplicates then remove 1 of the 2 left (half again)
    _, report = run_cleaning(texts("a b", "c d", "four words in here", "four words in here"), "text", config,
                             tmp_path / "s", tmp_path / "v" / "r")
    assert removal_warnings(report, "text") == []
    # length removes 3 of 4
    _, report = run_cleaning(texts("a b", "c d", "e f", "four words in here"), "text", config, tmp_path / "s",
                             tmp_path / "v" / "r2")
    assert removal_warnings(report, "text") == [{
        "step": "length", "label": "Length bounds", "removed": 3, "of": 4,
        "reason": "length removed 3 of 4 texts (75%). If they should stay, lower its min_length (now 4 tokens) or "
                  "raise its max_length (now 100000), or turn the step off (--step length.enabled=false; on the Data "
                  "tab: Cleaning steps → Length bounds)"}]


# Short texts as people write prompts, captions and titles, and copies of each that differ only in letter case,
# punctuation or spacing: the near-duplicate step compares a normalised form, so every copy goes.
SHORT_TEXTS = ["Hello, world!", "A red circle on a grey background.", "Thank you very much.", "Good morning",
               "What time is it?", "The quick brown fox jumps over the lazy dog.", "Don't stop me now",
               "Pasta with tomato sauce", "Dear diary, today was long.", "I have 2 cats"]
RESTYLED = {"hello world": 0, "HELLO, WORLD": 0, "a red circle on a grey background": 1,
            "Thank you very much!!!": 2, "good  morning.": 3, "What time is it ?": 4,
            "the quick brown fox jumps over the lazy dog": 5, "Don’t stop me now!": 6, "pasta with tomato sauce.": 7,
            "Dear diary,today was long": 8, "i have 2 cats.": 9}


def test_near_duplicates_catch_short_copies_in_other_case_punctuation_or_spacing(ctx):
    items = texts(*SHORT_TEXTS, *RESTYLED)
    outcome = near_text_duplicates(items, NearDuplicateTextParams(), ctx)
    assert sources(outcome.kept) == sources(items[:len(SHORT_TEXTS)])
    assert [(item.text, reason) for item, reason in outcome.removed] == [
        (copy, f"near-duplicate of doc{original}.txt (similarity 1.00)") for copy, original in RESTYLED.items()]


def test_near_duplicates_keep_short_texts_that_differ_in_a_word(ctx):
    # one word (or one number) apart is another text: the shapes example's captions, a count, an animal, an invoice
    distinct = ["a red circle", "a blue circle", "a red square", "I have 2 cats", "I have 3 cats",
                "The quick brown fox jumps over the lazy dog.", "The quick brown fox jumps over the lazy cat.",
                "Hope springs eternal", "Rope springs eternal", "dog bites man", "man bites dog", "!!!", "???",
                "Good document number 16, kept whole.", "Good document number 17, kept whole.",
                "Vacuum-insulated stainless steel", "Stainless steel vacuum-insulated"]
    outcome = near_text_duplicates(texts(*distinct), NearDuplicateTextParams(), ctx)
    assert outcome.removed == []


def test_near_duplicates_of_long_texts_ignore_case_punctuation_and_spacing(ctx):
    shouted = re.sub(r"[^\w\s]", "", PARAGRAPH).upper().replace(" ", "  ")
    items = [Item(source="original.txt", text=PARAGRAPH), Item(source="bread.txt", text=OTHER_TOPIC),
             Item(source="shouted.txt", text=shouted)]
    outcome = near_text_duplicates(items, NearDuplicateTextParams(), ctx)
    assert [(item.source, reason) for item, reason in outcome.removed] == [
        ("shouted.txt", "near-duplicate of original.txt (similarity 1.00)")]
