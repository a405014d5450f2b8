"""triggers of the WaveSpeed provider."""
