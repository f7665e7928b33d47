"""Sharing what the studio made: exports in the forms the Hub's libraries load (``export``), model and dataset cards
(``card``) and pushes to the Hugging Face Hub (``hub``). Nothing here imports a model library at import."""
