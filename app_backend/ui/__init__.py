"""The Gradio layer: one small builder per tab; the logic behind them lives in ``app_backend.tabs``."""
