"""What the Compare presets, Adapter sizes, Hybrid mixtures and MAD skills tabs compute and draw."""
