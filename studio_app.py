"""Entry point of the web studio (also the Hugging Face Spaces app file): `python studio_app.py`."""

from studio.settings import load_settings
from studio.ui.server import serve

if __name__ == "__main__":
    serve(load_settings())
