"""operators of the WaveSpeed provider."""
