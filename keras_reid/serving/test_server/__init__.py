"""A TEST stand-in for tensorflow_model_server: model_server.py."""
