"""Tabs that are not built yet say so plainly, with what they will do."""

from __future__ import annotations

COMING = {
    "Model": "Pick a Hugging Face model (Hub id or local folder) or an offline starter model, and a method "
             "(LoRA, full fine-tune, from scratch), with parameter counts and memory estimates.",
    "Train": "Train on a dataset version in a separate worker process with a live loss plot, progress, ETA, "
             "stop, resume, checkpoints and a queue.",
    "Generate": "Run the same prompts and seeds through the base model and trained checkpoints, side by side.",
    "Evaluate": "Blind human rating (pairwise and 1–5 scores) with a leaderboard and confidence intervals, "
                "plus automatic metrics on held-out data.",
}


def build(tab: str) -> None:
    import gradio as gr

    gr.Markdown(f"### {tab}: not built yet\nThis tab is not available in this version of the studio. "
                f"When it is, it will: {COMING[tab]}\n\nThe Data, Model and Train tabs work today.", elem_classes="not-built")
