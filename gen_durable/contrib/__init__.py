"""Integrations with web frameworks (L5, optional extras): each subpackage imports its
framework and the public API below it; nothing inside gen_durable imports them."""
