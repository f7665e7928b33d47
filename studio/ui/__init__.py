"""The web studio: one module per tab, plus shared state, forms and plots. Imports services only."""

from studio.ui.gradio_import import skip_stub_writing

skip_stub_writing()  # before any module of this package imports Gradio: see studio.ui.gradio_import
