"""sensors of the WaveSpeed provider."""
