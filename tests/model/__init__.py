"""A reference model of the outcome contract, and the test that holds the engine to it."""
