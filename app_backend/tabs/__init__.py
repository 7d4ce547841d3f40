"""What the Adapter sizes, Hybrid mixtures and MAD skills tabs compute and draw, beyond the service."""
