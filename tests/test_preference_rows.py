"""The shapes of a manifest row (studio.data.preferences): what the importers write and the objectives read."""

from studio.data.preferences import EXAMPLE, PAIR, THUMBS, count_kinds, row_kind


def test_a_row_is_a_pair_a_thumb_or_an_example():
    assert row_kind({"prompt": "2+2?", "response": "4", "rejected": "5"}) == PAIR
    assert row_kind({"caption": "a red circle", "file": "files/a.png", "rejected_file": "files/b.png"}) == PAIR
    assert row_kind({"prompt": "2+2?", "response": "4", "label": False}) == THUMBS
    assert row_kind({"prompt": "2+2?", "response": "4"}) == EXAMPLE
    assert row_kind({"text": "hello", "label": "yes"}) == EXAMPLE  # a label that is not a thumb is just a field
    assert count_kinds([{"text": "a"}, {"text": "b", "label": True}]) == {EXAMPLE: 1, PAIR: 0, THUMBS: 1}


def test_sft_leaves_out_disliked_answers_and_kto_counts_each_answer_once():
    from studio.models.preference import datasets_for

    liked = {"prompt": "p", "response": "good", "label": True}
    disliked = {"prompt": "p", "response": "bad", "label": False}
    pair = {"prompt": "p", "response": "good", "rejected": "bad"}  # the same two answers, as feedback pairs them
    other = {"prompt": "q", "response": "fine"}
    rows = {"train": [liked, disliked, pair, other], "validation": []}

    sft = datasets_for("sft", rows, lambda given, _split: given)["train"]
    assert [r["response"] for r in sft] == ["good", "good", "fine"]  # never "bad"

    kto = datasets_for("kto", rows, lambda given, _split: given)["train"]
    assert sorted((kto.examples[i]["response"], kto.labels[i]) for i in range(len(kto.labels))) == \
        [("bad", False), ("good", True)]
