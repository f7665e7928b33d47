"""Unit tests for reading text files, column mapping, splits, and the text import service end to end."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from studio.data.archive import StagedFile
from studio.data.clean import StepsConfigError
from studio.data.items import ImportRefused, Problem
from studio.data.mapping import ColumnMapping, guess_mapping, mapping_problem, normalise_messages
from studio.data.read_text import preview_tables, read_text_files, split_documents
from studio.data.service import get_version, import_dataset, read_manifest
from studio.data.split import SPLITS, assign_splits, parse_fractions
from studio.settings import load_settings
from studio.store import open_store

ALPACA = [
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Name the largest planet in the solar system.", "input": "", "output": "Jupiter is the largest."},
]


@pytest.fixture
def text_store(tmp_path):
    opened = open_store(load_settings(home=tmp_path / "home"))
    yield opened
    opened.close()


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def staged(*paths: Path) -> list[StagedFile]:
    return [StagedFile(path.name, path) for path in paths]


def jsonl(rows: list) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, "PNG")
    return buffer.getvalue()


def problems_by_file(problems: list[Problem]) -> dict[str, str]:
    return {p.file: p.reason for p in problems}


# --------------------------------------------------------------------------------------------------
# plain documents


def test_single_text_file_is_split_into_paragraphs(tmp_path):
    path = write(tmp_path, "corpus.txt", "First paragraph,\nstill first.\n\nSecond paragraph.\n   \n\n\nThird one.\n")
    result = read_text_files(staged(path))
    assert [(i.source, i.text) for i in result.items] == [
        ("corpus.txt#1", "First paragraph,\nstill first."),
        ("corpus.txt#2", "Second paragraph."),
        ("corpus.txt#3", "Third one.\n"),
    ]
    assert result.problems == []
    assert result.notes == ["1 text file(s), split: blank_lines"]


def test_several_text_files_are_one_document_each(tmp_path):
    a = write(tmp_path, "a.txt", "Alpha paragraph.\n\nAlpha again.")
    b = write(tmp_path, "b.md", "# Beta\n\nA markdown *document*.")
    result = read_text_files(staged(a, b))
    assert [(i.source, i.text) for i in result.items] == [
        ("a.txt", "Alpha paragraph.\n\nAlpha again."), ("b.md", "# Beta\n\nA markdown *document*.")]
    assert all(i.text_format == "text" for i in result.items)
    assert result.notes == ["2 text file(s), split: file"]


def test_markdown_alone_is_split_like_text(tmp_path):
    path = write(tmp_path, "notes.md", "# Title\n\nSome **bold** text.")
    result = read_text_files(staged(path))
    assert [i.text for i in result.items] == ["# Title", "Some **bold** text."]


@pytest.mark.parametrize("mode, expected", [
    ("lines", ["one", "two", "three"]),
    ("blank_lines", ["one\ntwo", "three"]),
    ("file", ["one\ntwo\n\nthree"]),
])
def test_explicit_text_split(tmp_path, mode, expected):
    assert split_documents("one\ntwo\n\nthree", mode) == expected
    path = write(tmp_path, "doc.txt", "one\ntwo\n\nthree")
    assert [i.text for i in read_text_files(staged(path), text_split=mode).items] == expected


def test_utf8_bom_and_utf16_text_are_decoded(tmp_path):
    bom = write(tmp_path, "bom.txt", "\ufeffcafé au lait".encode("utf-8"))
    utf16 = write(tmp_path, "wide.txt", "naïve résumé".encode("utf-16"))
    result = read_text_files(staged(bom, utf16))
    assert [i.text for i in result.items] == ["café au lait", "naïve résumé"]
    assert result.problems == []


# --------------------------------------------------------------------------------------------------
# tables


def test_csv_text_column_other_columns_ignored(tmp_path):
    path = write(tmp_path, "reviews.csv", 'id,text,label\n1,"Great, really great.",pos\n2,Awful film.,neg\n')
    result = read_text_files(staged(path))
    assert [(i.source, i.text, i.text_format) for i in result.items] == [
        ("reviews.csv#1", "Great, really great.", "text"), ("reviews.csv#2", "Awful film.", "text")]
    assert result.notes == ["reviews.csv: 2 rows, text from column 'text'"]


def test_tsv_with_content_column(tmp_path):
    path = write(tmp_path, "data.tsv", "content\tsource\nA line, with a comma.\tweb\nAnother line.\tbook\n")
    result = read_text_files(staged(path))
    assert [i.text for i in result.items] == ["A line, with a comma.", "Another line."]


def test_csv_header_with_bom_and_capitals(tmp_path):
    path = write(tmp_path, "caps.csv", "\ufeffID,Text\n1,First row here\n".encode("utf-8"))
    result = read_text_files(staged(path))
    assert [i.text for i in result.items] == ["First row here"]


def test_missing_csv_cells_become_empty_text(tmp_path):
    path = write(tmp_path, "short.csv", "id,text\n1\n2,hello there\n")
    assert [i.text for i in read_text_files(staged(path)).items] == ["", "hello there"]


def test_prompt_response_csv(tmp_path):
    path = write(tmp_path, "qa.csv", "question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n")
    result = read_text_files(staged(path))
    assert [(i.prompt, i.response, i.text_format) for i in result.items] == [
        ("What is 2+2?", "4", "pair"), ("Capital of France?", "Paris", "pair")]
    assert result.items[0].text is None


def test_alpaca_instruction_input_output_joins_the_context(tmp_path):
    path = write(tmp_path, "alpaca.jsonl", jsonl(ALPACA))
    result = read_text_files(staged(path))
    assert [(i.prompt, i.response) for i in result.items] == [
        ("Translate to French.\n\nGood morning", "Bonjour"),
        ("Name the largest planet in the solar system.", "Jupiter is the largest."),
    ]
    assert result.notes == ["alpaca.jsonl: 2 rows, prompt from 'instruction' + 'input', response from 'output'"]


def test_chat_messages_in_openai_shape(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]},
            {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": 4}]}]
    result = read_text_files(staged(write(tmp_path, "chat.jsonl", jsonl(rows))))
    assert [i.text_format for i in result.items] == ["chat", "chat"]
    assert result.items[0].messages == rows[0]["messages"]
    assert result.items[1].messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_chat_conversations_in_sharegpt_shape(tmp_path):
    rows = [{"id": "x1", "conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                                           {"from": "gpt", "value": "Hello there"}]}]
    result = read_text_files(staged(write(tmp_path, "sharegpt.jsonl", jsonl(rows))))
    assert result.items[0].messages == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "Hello there"}]
    assert result.notes == ["sharegpt.jsonl: 1 rows, chat messages from column 'conversations'"]


def test_chat_messages_stored_as_json_text_in_a_csv(tmp_path):
    messages = [{"role": "user", "content": "Hi, you"}, {"role": "assistant", "content": "Hello"}]
    path = tmp_path / "chat.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["messages"])
        writer.writerow([json.dumps(messages)])
    assert read_text_files(staged(path)).items[0].messages == messages


def test_bad_chat_rows_are_skipped_with_a_warning(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "fine"}]}, {"messages": []},
            {"messages": [{"speaker": "user", "content": "no role"}]}, {"messages": "not json"},
            {"messages": [{"role": "user", "content": "also fine"}]}]
    result = read_text_files(staged(write(tmp_path, "mixed.jsonl", jsonl(rows))))
    assert [i.source for i in result.items] == ["mixed.jsonl#1", "mixed.jsonl#5"]
    assert result.problems == []
    warnings = problems_by_file(result.warnings)
    assert set(warnings) == {"mixed.jsonl#2", "mixed.jsonl#3", "mixed.jsonl#4"}
    assert "non-empty list" in warnings["mixed.jsonl#2"]
    assert "lacks role/content (keys: speaker, content)" in warnings["mixed.jsonl#3"]
    assert all(reason.startswith("row skipped: ") for reason in warnings.values())


def test_many_bad_rows_are_summed_up(tmp_path):
    rows = [{"messages": []} for _ in range(8)] + [{"messages": [{"role": "user", "content": "ok"}]}]
    result = read_text_files(staged(write(tmp_path, "bad.jsonl", jsonl(rows))))
    assert len(result.items) == 1
    assert len(result.warnings) == 6
    assert result.warnings[-1] == Problem("bad.jsonl", "8 rows skipped in all")


def test_normalise_messages_maps_role_aliases():
    assert normalise_messages([{"from": "Human", "value": "a"}, {"role": "model", "content": "b"},
                               {"role": "bot", "content": "c"}, {"role": "tool", "content": "d"}]) == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "assistant", "content": "c"}, {"role": "tool", "content": "d"}]
    with pytest.raises(ValueError):
        normalise_messages(["just a string"])


def test_json_list_of_records_and_of_strings(tmp_path):
    records = write(tmp_path, "records.json", json.dumps([{"text": "first record"}, {"text": "second record"}]))
    strings = write(tmp_path, "strings.json", json.dumps(["plain one", "plain two"]))
    result = read_text_files(staged(records, strings))
    assert [(i.source, i.text) for i in result.items] == [
        ("records.json#1", "first record"), ("records.json#2", "second record"),
        ("strings.json#1", "plain one"), ("strings.json#2", "plain two")]


def test_json_wrapped_in_a_data_key(tmp_path):
    path = write(tmp_path, "wrapped.json", json.dumps({"version": 2, "data": ALPACA}))
    result = read_text_files(staged(path))
    assert [i.response for i in result.items] == ["Bonjour", "Jupiter is the largest."]


def test_json_that_is_not_a_list_is_a_problem(tmp_path):
    path = write(tmp_path, "scalar.json", "42")
    result = read_text_files(staged(path))
    assert result.items == []
    assert result.problems == [Problem("scalar.json", "JSON must be a list of records")]


def test_parquet_text_pairs_and_chats(tmp_path):
    pq.write_table(pa.table({"text": ["parquet row one", "parquet row two"], "n": [1, 2]}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"prompt": ["Hi?", "Why?"], "response": ["Hello.", None]}), tmp_path / "p.parquet")
    messages = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    pq.write_table(pa.table({"messages": messages}), tmp_path / "c.parquet")
    result = read_text_files(staged(tmp_path / "t.parquet", tmp_path / "p.parquet", tmp_path / "c.parquet"))
    assert result.problems == [] and result.warnings == []
    assert [i.text for i in result.items[:2]] == ["parquet row one", "parquet row two"]
    assert [(i.prompt, i.response) for i in result.items[2:4]] == [("Hi?", "Hello."), ("Why?", "")]
    assert result.items[4].messages == messages[0]
    assert [i.source for i in result.items] == ["t.parquet#1", "t.parquet#2", "p.parquet#1", "p.parquet#2",
                                                "c.parquet#1"]


# --------------------------------------------------------------------------------------------------
# column mapping


@pytest.mark.parametrize("columns, expected", [
    (["text"], ColumnMapping(format="text", text="text")),
    (["id", "Content", "label"], ColumnMapping(format="text", text="Content")),
    (["body"], ColumnMapping(format="text", text="body")),
    (["whatever"], ColumnMapping(format="text", text="whatever")),  # a lone column is the text
    (["prompt", "completion"], ColumnMapping(format="pair", prompt="prompt", response="completion")),
    (["question", "answer", "context"],
     ColumnMapping(format="pair", prompt="question", response="answer", context="context")),
    (["instruction", "input", "output"],
     ColumnMapping(format="pair", prompt="instruction", response="output", context="input")),
    (["input", "output"], ColumnMapping(format="pair", prompt="input", response="output")),
    (["prompt", "chosen", "rejected"],
     ColumnMapping(format="pair", prompt="prompt", response="chosen", rejected="rejected")),
    (["chosen", "rejected"], ColumnMapping(format="chat", messages="chosen", rejected="rejected")),
    (["prompt", "completion", "label"],
     ColumnMapping(format="pair", prompt="prompt", response="completion", label="label")),
    (["messages", "text"], ColumnMapping(format="chat", messages="messages")),
    (["id", "conversations"], ColumnMapping(format="chat", messages="conversations")),
    (["id", "label"], None),
    ([], None),
])
def test_guess_mapping(columns, expected):
    assert guess_mapping(columns) == expected


def test_explicit_mapping_overrides_the_guess(tmp_path):
    path = write(tmp_path, "news.csv", "text,summary\nA very long article body.,Short summary.\n")
    assert [i.text for i in read_text_files(staged(path)).items] == ["A very long article body."]
    mapping = ColumnMapping(format="text", text="summary")
    assert [i.text for i in read_text_files(staged(path), mapping=mapping).items] == ["Short summary."]
    pair = ColumnMapping(format="pair", prompt="text", response="summary")
    item = read_text_files(staged(path), mapping=pair).items[0]
    assert (item.prompt, item.response) == ("A very long article body.", "Short summary.")


def test_wrong_explicit_column_is_a_problem_naming_the_columns_found(tmp_path):
    path = write(tmp_path, "news.csv", "headline,body\nTitle,Some body text.\n")
    result = read_text_files(staged(path), mapping=ColumnMapping(format="text", text="article"))
    assert result.items == []
    assert result.problems == [Problem("news.csv", "column 'article' not found for text from column 'article'. "
                                                   "Columns found: headline, body.")]


def test_unguessable_columns_are_a_problem_naming_the_columns_found(tmp_path):
    path = write(tmp_path, "labels.csv", "id,label\n1,pos\n")
    result = read_text_files(staged(path))
    assert result.items == []
    [problem] = result.problems
    assert problem.file == "labels.csv"
    assert "could not tell which column holds the text" in problem.reason
    assert "Columns found: id, label." in problem.reason


def test_mapping_problem_for_pairs_lists_each_missing_column():
    mapping = ColumnMapping(format="pair", prompt="q", response="a", context="ctx")
    message = mapping_problem("f.csv", mapping, ["q", "x"])
    assert message.startswith("column 'a', 'ctx' not found for prompt from 'q' + 'ctx', response from 'a'.")
    assert message.endswith("Columns found: q, x.")
    assert mapping_problem("f.csv", ColumnMapping(format="chat"), ["messages"]).startswith("column '(not chosen)'")
    assert mapping_problem("f.csv", ColumnMapping(format="text", text="q"), ["q"]) is None


def test_preview_tables_shows_columns_guess_and_problems(tmp_path):
    good = write(tmp_path, "good.jsonl", jsonl(ALPACA))
    bad = write(tmp_path, "bad.csv", "id,label\n1,x\n")
    broken = write(tmp_path, "broken.jsonl", '{"text": "ok"}\n{oops\n')
    doc = write(tmp_path, "doc.txt", "not a table")
    previews = {p["file"]: p for p in preview_tables(staged(good, bad, broken, doc))}
    assert set(previews) == {"good.jsonl", "bad.csv", "broken.jsonl"}
    assert previews["good.jsonl"]["columns"] == ["instruction", "input", "output"]
    assert previews["good.jsonl"]["mapping"]["format"] == "pair" and previews["good.jsonl"]["problem"] is None
    assert previews["good.jsonl"]["rows"] == ALPACA
    assert "Columns found: id, label" in previews["bad.csv"]["problem"]
    assert previews["broken.jsonl"]["problem"].startswith("line 2 is not valid JSON")


# --------------------------------------------------------------------------------------------------
# bad inputs: each one a Problem naming the file, the rest goes on


def test_bad_text_files_are_reported_and_the_rest_is_read(tmp_path):
    good = write(tmp_path, "good.txt", "A perfectly good document.")
    empty = write(tmp_path, "empty.txt", b"")
    latin1 = write(tmp_path, "latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"))
    image = write(tmp_path, "picture.txt", png_bytes())
    no_column = write(tmp_path, "nocol.csv", "id,label\n1,pos\n")
    broken = write(tmp_path, "broken.jsonl", '{"text": "fine line"}\n{"text": unquoted}\n{"text": "x"}\n')
    unsupported = write(tmp_path, "report.docx", b"PK\x03\x04 not really")
    fake_parquet = write(tmp_path, "fake.parquet", "text\nnot parquet at all\n")
    table = write(tmp_path, "good.csv", "text\nrow one text\nrow two text\n")
    result = read_text_files(staged(good, empty, latin1, image, no_column, broken, unsupported, fake_parquet, table))

    assert [i.source for i in result.items] == ["good.txt", "good.csv#1", "good.csv#2"]
    reasons = problems_by_file(result.problems)
    assert list(reasons) == ["empty.txt", "latin1.txt", "picture.txt", "nocol.csv", "broken.jsonl", "report.docx",
                             "fake.parquet"]
    assert reasons["empty.txt"] == "empty file (0 bytes)"
    assert reasons["latin1.txt"] == ("not valid UTF-8 text (undecodable byte 0xe9 at offset 3); "
                                     "save the file as UTF-8")
    assert reasons["picture.txt"] == "not text: the content is PNG image"
    assert "Columns found: id, label" in reasons["nocol.csv"]
    assert reasons["broken.jsonl"].startswith("line 2 is not valid JSON (")
    assert reasons["report.docx"].startswith("'.docx' is not a text format (use .txt")
    assert reasons["fake.parquet"].startswith("not a readable Parquet file")


def test_binary_content_in_a_table_file_is_a_problem(tmp_path):
    csv_png = write(tmp_path, "table.csv", png_bytes())
    nul = write(tmp_path, "nul.jsonl", b'{"text": "a"}\x00\x00\x00')
    reasons = problems_by_file(read_text_files(staged(csv_png, nul)).problems)
    assert reasons == {"table.csv": "not text: the content is PNG image",
                       "nul.jsonl": "not text: the content is binary data"}


def test_file_without_extension_is_a_problem(tmp_path):
    path = write(tmp_path, "README", "some text")
    assert read_text_files(staged(path)).problems == [
        Problem("README", "'no extension' is not a text format (use .txt .md .csv .tsv .jsonl .json .parquet)")]


# --------------------------------------------------------------------------------------------------
# limits: a line, a cell, the columns of a table, the size of a .json file; each named, the rest read


def limits(**overrides):
    return load_settings(**{"max_line_chars": 1_000, **overrides})


def test_an_overlong_jsonl_line_is_skipped_and_named_and_the_rest_of_the_file_imports(tmp_path):
    path = write(tmp_path, "rows.jsonl", jsonl([{"text": "first"}, {"text": "x" * 5_000}, {"text": "third"}]))
    result = read_text_files(staged(path), settings=limits())
    assert [i.text for i in result.items] == ["first", "third"]
    assert result.problems == []
    assert result.warnings == [
        Problem("rows.jsonl", "line 2 is longer than 1,000 characters (STUDIO_MAX_LINE_CHARS); skipped")]


def test_an_overlong_csv_row_is_skipped_and_named_and_the_rest_of_the_file_imports(tmp_path):
    path = write(tmp_path, "rows.csv", "text,topic\nfirst,a\n" + "y" * 5_000 + ",b\nthird,c\n")
    result = read_text_files(staged(path), settings=limits())
    assert [(i.source, i.text) for i in result.items] == [("rows.csv#1", "first"), ("rows.csv#2", "third")]
    assert result.warnings == [
        Problem("rows.csv", "line 3 is longer than 1,000 characters (STUDIO_MAX_LINE_CHARS); skipped")]


def test_many_overlong_lines_are_summed_up(tmp_path):
    path = write(tmp_path, "doc.txt", ("z" * 2_000 + "\n") * 8 + "a short line\n")
    result = read_text_files(staged(path), text_split="lines", settings=limits())
    assert [i.text for i in result.items] == ["a short line"]
    assert len(result.warnings) == 6 and result.warnings[-1] == Problem("doc.txt", "8 lines skipped in all")


def test_a_quote_that_is_never_closed_cannot_swallow_the_file(tmp_path):
    path = write(tmp_path, "open.csv", 'text\n"an open quote\n' + "and on\n" * 500 + "the end\n")
    result = read_text_files(staged(path), settings=limits())
    assert result.items == []
    assert result.problems == [Problem("open.csv", "line 143: a row runs on over several lines past 1,000 "
                                                   "characters (STUDIO_MAX_LINE_CHARS): a quoted field that is "
                                                   "never closed?")]


def test_a_csv_field_may_hold_line_breaks_up_to_the_limit(tmp_path):
    long_field = "a field\n" * 100  # 800 characters over 100 lines, with 1,000 allowed
    path = write(tmp_path, "quoted.csv", f'text\n"{long_field}"\nnext\n')
    assert [i.text for i in read_text_files(staged(path), settings=limits()).items] == [long_field, "next"]


@pytest.mark.parametrize("name", ["wide.csv", "wide.tsv", "wide.jsonl", "wide.json", "wide.parquet"])
def test_a_table_wider_than_the_column_limit_is_refused_naming_the_setting(tmp_path, name):
    row = {"text": "hello", **{f"extra{n}": str(n) for n in range(10)}}
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({key: [value] for key, value in row.items()}), path)
    elif name.endswith(".json"):
        path.write_text(json.dumps([row]))
    elif name.endswith(".jsonl"):
        path.write_text(jsonl([row]))
    else:
        separator = "\t" if name.endswith(".tsv") else ","
        path.write_text(separator.join(row) + "\n" + separator.join(row.values()) + "\n")
    result = read_text_files(staged(path), settings=limits(max_table_columns=10))
    assert result.items == []
    assert result.problems == [Problem(name, "it has 11 columns; the limit is 10 (STUDIO_MAX_TABLE_COLUMNS)")]


def test_a_row_wider_than_the_column_limit_is_skipped(tmp_path):
    rows = [{"text": "narrow"}, {"text": "wide", **{f"k{n}": n for n in range(20)}}, {"text": "narrow again"}]
    result = read_text_files(staged(write(tmp_path, "rows.jsonl", jsonl(rows))), settings=limits(max_table_columns=10))
    assert [i.text for i in result.items] == ["narrow", "narrow again"]
    assert result.warnings == [Problem("rows.jsonl#2", "row skipped: it has 21 columns; the limit is 10 "
                                                       "(STUDIO_MAX_TABLE_COLUMNS)")]


def test_a_parquet_cell_over_the_limit_skips_its_row(tmp_path):
    messages = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                [{"role": "user", "content": "q" * 2_000}, {"role": "assistant", "content": "a"}]]
    pq.write_table(pa.table({"text": ["short", "w" * 2_000, "fine"]}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"messages": messages}), tmp_path / "c.parquet")
    result = read_text_files(staged(tmp_path / "t.parquet", tmp_path / "c.parquet"), settings=limits())
    assert [i.source for i in result.items] == ["t.parquet#1", "t.parquet#3", "c.parquet#1"]
    assert result.warnings == [
        Problem("t.parquet#2", "row skipped: column 'text' holds 2,000 characters; the limit is 1,000 "
                               "(STUDIO_MAX_LINE_CHARS)"),
        Problem("c.parquet#2", "row skipped: column 'messages' holds 2,014 characters; the limit is 1,000 "
                               "(STUDIO_MAX_LINE_CHARS)")]


def test_a_json_file_over_its_size_limit_is_refused_pointing_to_jsonl(tmp_path):
    path = write(tmp_path, "big.json", json.dumps([{"text": "a record of some words"}] * 60_000))
    assert path.stat().st_size > 1024 * 1024
    result = read_text_files(staged(path), settings=limits(max_json_mb=1))
    assert result.items == []
    assert result.problems == [Problem("big.json", "a .json file is parsed whole, and this one is 2 MB (limit 1 MB, "
                                                   "STUDIO_MAX_JSON_MB): save it as .jsonl, one record per line, "
                                                   "which is read a line at a time")]


def test_an_undecodable_byte_deep_in_a_file_is_found_at_its_offset(tmp_path):
    good_part = "text\n" + "a good row of text\n" * 20_000  # far past the reader's first chunks
    path = write(tmp_path, "late.csv", good_part.encode() + b"caf\xe9\n")
    bom = write(tmp_path, "bom.txt", b"\xef\xbb\xbfabc\xff")
    reasons = problems_by_file(read_text_files(staged(path, bom)).problems)
    assert reasons == {"late.csv": f"not valid UTF-8 text (undecodable byte 0xe9 at offset {len(good_part) + 3}); "
                                   "save the file as UTF-8",
                       "bom.txt": "not valid UTF-8 text (undecodable byte 0xff at offset 6); save the file as UTF-8"}


def test_the_preview_reads_only_the_first_rows(tmp_path):
    # the bad byte far down the file is found by the import, not by the preview of its first rows
    path = write(tmp_path, "late.csv", ("text\n" + "a good row of text\n" * 20_000).encode() + b"caf\xe9\n")
    [preview] = preview_tables(staged(path))
    assert preview["problem"] is None and preview["rows"] == [{"text": "a good row of text"}] * 5


# --------------------------------------------------------------------------------------------------
# import_dataset end to end


def _good_and_bad_files(folder: Path) -> tuple[list[Path], dict[str, str]]:
    files = [
        write(folder, "story.txt", "Once upon a time a fox learned to read the stars above the valley."),
        write(folder, "guide.md", "# Guide\n\nWater the tomatoes early in the morning, never at noon."),
        write(folder, "facts.csv", "text,topic\nOctopuses have three hearts and blue blood.,sea\n"
                                   "Honey found in ancient tombs can still be eaten.,food\n"
                                   "A day on Venus is longer than its year.,space\n"),
        write(folder, "empty.txt", b""),
        write(folder, "latin1.txt", "caf\xe9".encode("latin-1")),
        write(folder, "photo.txt", png_bytes()),
        write(folder, "labels.csv", "id,label\n1,pos\n2,neg\n"),
        write(folder, "broken.jsonl", '{"text": "ok line here"}\nnot json\n'),
        write(folder, "slides.pptx", b"PK\x03\x04 binary"),
    ]
    expected = {"empty.txt": "empty file (0 bytes)",
                "latin1.txt": "not valid UTF-8 text",
                "photo.txt": "not text: the content is PNG image",
                "labels.csv": "Columns found: id, label",
                "broken.jsonl": "line 2 is not valid JSON",
                "slides.pptx": "'.pptx' is not a text format"}
    return files, expected


def test_import_reports_each_bad_file_and_keeps_the_good_ones(tmp_path, text_store):
    files, expected = _good_and_bad_files(tmp_path / "in")
    result = import_dataset(text_store, files, name="mixed", seed=3)

    assert result["modality"] == "text"
    assert result["items_in"] == 5 and result["items_kept"] == 5
    errors = {e["file"]: e["reason"] for e in result["errors"]}
    assert set(errors) == set(expected)
    for file, fragment in expected.items():
        assert fragment in errors[file], (file, errors[file])
    assert sum(result["splits"].values()) == 5

    version = get_version(text_store, str(result["dataset_id"]))
    rows = read_manifest(text_store, version)
    assert sorted(r["source"] for r in rows) == ["facts.csv#1", "facts.csv#2", "facts.csv#3", "guide.md", "story.txt"]
    assert {r["split"] for r in rows} <= set(SPLITS)
    report = json.loads((Path(result["path"]) / "report.json").read_text(encoding="utf-8"))
    assert {e["file"] for e in report["errors"]} == set(expected)
    assert report["items_kept"] == 5


def test_import_counts_cleaning_removals_and_notes_missing_paths(tmp_path, text_store):
    folder = tmp_path / "in"
    table = write(folder, "rows.csv", "text\nThe same sentence twice.\nThe same sentence twice.\nOk\n"
                                      "A different sentence entirely.\n")
    result = import_dataset(text_store, [table, folder / "missing.txt"], name="rows")
    assert result["items_in"] == 4 and result["items_kept"] == 2
    assert result["removed"]["exact_duplicates"] == 1 and result["removed"]["length"] == 1
    assert "pii" not in result["removed"]  # off by default, so not counted
    assert result["errors"] == [{"file": str(folder / "missing.txt"), "reason": "no such file or folder"}]


def test_import_with_an_explicit_mapping(tmp_path, text_store):
    table = write(tmp_path, "qa.csv", "q,a\nWhat colour is the sky?,Blue on a clear day.\n"
                                      "What do bees make?,They make honey and wax.\n")
    mapping = ColumnMapping(format="pair", prompt="q", response="a")
    result = import_dataset(text_store, [table], mapping=mapping, split="1,0,0")
    rows = read_manifest(text_store, get_version(text_store, str(result["dataset_id"])))
    assert [(r["prompt"], r["response"]) for r in rows] == [
        ("What colour is the sky?", "Blue on a clear day."), ("What do bees make?", "They make honey and wax.")]
    assert result["splits"] == {"train": 2, "validation": 0, "test": 0}


def test_import_refused_when_nothing_is_usable(tmp_path, text_store):
    files, expected = _good_and_bad_files(tmp_path / "in")
    bad_only = [f for f in files if f.name in expected]
    with pytest.raises(ImportRefused) as refused:
        import_dataset(text_store, bad_only, name="nothing")
    message = str(refused.value)
    assert message.startswith("nothing usable found (")
    for file in expected:
        assert file in message
    assert list((text_store.home / "uploads").iterdir()) == []  # the refused upload is not kept


def test_import_refused_when_cleaning_removes_everything(tmp_path, text_store):
    table = write(tmp_path, "tiny.csv", "text\nA\nB\n")
    with pytest.raises(ImportRefused, match=r"cleaning removed all 2 items \(length: 2\)"):
        import_dataset(text_store, [table])


def test_import_with_bad_step_settings_fails_before_keeping_anything(tmp_path, text_store):
    table = write(tmp_path, "ok.csv", "text\nA fine sentence here.\n")
    with pytest.raises(StepsConfigError, match="unknown text cleaning step"):
        import_dataset(text_store, [table], steps={"spellcheck": {}})
    with pytest.raises(StepsConfigError, match="cleaning step 'length'"):
        import_dataset(text_store, [table], steps={"length": {"unit": "pages"}})
    assert list((text_store.home / "uploads").iterdir()) == []


def test_import_splits_are_deterministic_for_a_seed(tmp_path, text_store):
    lines = "".join(f"Sentence number {n} talks about topic {n * 7919 % 101}.\n" for n in range(40))
    table = write(tmp_path, "many.csv", "text\n" + lines)

    def labels(seed: int) -> list[str]:
        result = import_dataset(text_store, [table], name=f"many{seed}", seed=seed)
        rows = read_manifest(text_store, get_version(text_store, str(result["dataset_id"])))
        return [r["split"] for r in sorted(rows, key=lambda r: r["source"])]

    assert labels(5) == labels(5)
    assert labels(5) != labels(6)


# --------------------------------------------------------------------------------------------------
# splits


def test_assign_splits_counts():
    labels = assign_splits(100, (0.8, 0.1, 0.1), seed=0)
    assert len(labels) == 100
    assert [labels.count(s) for s in SPLITS] == [80, 10, 10]
    labels = assign_splits(10, (0.7, 0.3, 0.0), seed=0)
    assert [labels.count(s) for s in SPLITS] == [7, 3, 0]


def test_assign_splits_is_deterministic_for_a_seed_and_differs_across_seeds():
    assert assign_splits(50, (0.8, 0.1, 0.1), seed=42) == assign_splits(50, (0.8, 0.1, 0.1), seed=42)
    assert assign_splits(50, (0.8, 0.1, 0.1), seed=42) != assign_splits(50, (0.8, 0.1, 0.1), seed=43)


@pytest.mark.parametrize("count, expected", [
    (0, [0, 0, 0]),
    (1, [1, 0, 0]),
    (2, [1, 1, 0]),
    (3, [1, 1, 1]),
    (5, [3, 1, 1]),
])
def test_small_datasets_still_get_a_validation_item(count, expected):
    labels = assign_splits(count, (0.8, 0.1, 0.1), seed=0)
    assert [labels.count(s) for s in SPLITS] == expected


@pytest.mark.parametrize("fractions", [(0.2, 0.4, 0.4), (0.34, 0.33, 0.33), (0.1, 0.45, 0.45), (0.5, 0.5, 0.0),
                                       (0.8, 0.1, 0.1), (0.98, 0.01, 0.01)])
def test_assign_splits_always_trains_on_something(fractions):
    for count in range(1, 40):
        labels = assign_splits(count, fractions, seed=count)
        assert len(labels) == count
        assert labels.count("train") >= 1, (count, [labels.count(s) for s in SPLITS])
        for index, split in enumerate(SPLITS):
            if fractions[index] == 0:
                assert labels.count(split) == 0


@pytest.mark.parametrize("text, expected", [
    ("0.8,0.1,0.1", (0.8, 0.1, 0.1)),
    (" 0.7 , 0.2 , 0.1 ", (0.7, 0.2, 0.1)),
    ("0.9,0.1", (0.9, 0.1, 0.0)),
    ("1,0,0", (1.0, 0.0, 0.0)),
    ([0.6, 0.2, 0.2], (0.6, 0.2, 0.2)),
    ((0.5, 0.5), (0.5, 0.5, 0.0)),
])
def test_parse_fractions_accepts(text, expected):
    assert parse_fractions(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["0.5,0.5,0.5", "0.8,0.1", "-0.1,0.6,0.5", "0,0.5,0.5", "1", "0.25,0.25,0.25,0.25",
                                  "a,b,c", "", [0.8, 0.3, -0.1]])
def test_parse_fractions_rejects(text):
    with pytest.raises(ValueError):
        parse_fractions(text)


def test_parse_fractions_message_shows_the_bad_input():
    with pytest.raises(ValueError, match=r"like 0.8,0.1,0.1 \(got '0.5,0.5,0.5'\)"):
        parse_fractions("0.5,0.5,0.5")


def test_import_rejects_a_bad_split_before_any_work(tmp_path, text_store):
    table = write(tmp_path, "ok.csv", "text\nA fine sentence here.\n")
    with pytest.raises(ValueError, match="split must be three non-negative fractions"):
        import_dataset(text_store, [table], split="0.9,0.9,0.9")
    assert list((text_store.home / "uploads").iterdir()) == []
