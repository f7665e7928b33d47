"""The web studio: one module per tab, plus shared state, forms and plots. Imports services only."""
