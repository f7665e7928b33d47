"""What a rater can decide on a pair and what ratings are exported as. Imports nothing, so the CLI's parser reads
them (``studio eval vote --choice``, ``studio eval export --kind``) without loading the store."""

CHOICES = ("a", "b", "tie", "both_bad", "skip")  # A better, B better, a tie, both bad, can't judge
EXPORT_KINDS = {"events": "jsonl", "battles": "csv", "preferences": "jsonl"}  # kind → file suffix
