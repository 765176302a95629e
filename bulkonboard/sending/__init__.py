"""Sending valid rows: the worker pool, each row's plan of steps, retries and pace."""
