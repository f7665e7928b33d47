"""The shapes of a manifest row (studio.data.preferences): what the importers write and the objectives read."""

from studio.data.preferences import EXAMPLE, PAIR, THUMBS, count_kinds, row_kind


def test_a_row_is_a_pair_a_thumb_or_an_example():
    assert row_kind({"prompt": "2+2?", "response": "4", "rejected": "5"}) == PAIR
    assert row_kind({"caption": "a red circle", "file": "files/a.png", "rejected_file": "files/b.png"}) == PAIR
    assert row_kind({"prompt": "2+2?", "response": "4", "label": False}) == THUMBS
    assert row_kind({"prompt": "2+2?", "response": "4"}) == EXAMPLE
    assert row_kind({"text": "hello", "label": "yes"}) == EXAMPLE  # a label that is not a thumb is just a field
    assert count_kinds([{"text": "a"}, {"text": "b", "label": True}]) == {EXAMPLE: 1, PAIR: 0, THUMBS: 1}
