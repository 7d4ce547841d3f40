"""mad-models demo app (placeholder until the app issue lands)."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"

if __name__ == "__main__":
    if not any(ASSETS.glob("*/*.safetensors")):
        print("mad-models: no demo assets yet (build them with `python -m mad_models.assets build`).")
