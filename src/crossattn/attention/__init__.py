"""Attention capture: the recording processor, the streaming store, the tracer and the maps it returns."""
