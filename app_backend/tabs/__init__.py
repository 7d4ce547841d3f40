"""What each tab computes and draws, one module per tab, plain Python without gradio (see ``app_backend``)."""
