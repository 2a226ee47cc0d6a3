"""Clients of a served keras-reid model (tf_serving.py) and their CLI."""
