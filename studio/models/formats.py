"""The forms an export of a run or checkpoint can take (``studio export --format``, the Share tab): ``peft`` (the
adapter folder), ``diffusers-lora`` (one LoRA weights file for a diffusers pipeline) and ``merged`` (a complete
model). Imports nothing, so the CLI's parser reads them without loading the store or a model library."""

FORMATS = ("peft", "diffusers-lora", "merged")
