"""What fills the Train form, through the page's own handlers: the catalog's recommended values (named when laid
over the form), and a job file (the browser's round trip is test_web_train)."""

from __future__ import annotations

from test_train_on_votes import page


def test_the_recommended_values_laid_over_the_form_are_named(store):
    handlers = page(store)["handlers"]
    *_, filled, message = handlers["recommended_values"]("starter-text", "sft", None)
    assert filled == ["starter-text", "sft"]
    assert "recommended for **starter-text** (sft)" in message and "learning_rate=3e-3" in message, message
    # A form filled already for this model and objective (a loaded job file, "Train on these votes"): left as it is.
    *_, filled, message = handlers["recommended_values"]("starter-text", "sft", ["starter-text", "sft"])
    assert not isinstance(message, str) and not isinstance(filled, list)


def test_a_bad_job_file_changes_nothing_and_says_why(store, tmp_path):
    handlers = page(store)["handlers"]
    job = tmp_path / "job.yaml"
    job.write_text("dataset: '1:1'\nmodel: starter-text\nmethod: lora\nlearning_rat: 0.1\n")
    message, *rest = handlers["on_load_job"](str(job), "default")
    assert "job.yaml: unknown setting" in message and "learning_rat" in message, message
    assert all(not isinstance(value, (str, list)) for value in rest)  # every component skipped
