"""hooks of the WaveSpeed provider."""
