"""rftt-plugin: RFTT (Reinforced Functional Token Tuning) for verl.

The method core (``tokens``, ``reward``, ``search``, ``backends``) is plain Python that runs
without verl; ``integration`` binds it to verl's registries and ``cpu`` makes verl's stock
trainer run on a CPU-only machine. Importing this package is cheap: nothing heavy is imported
here.
"""

__version__ = "0.1.0"
