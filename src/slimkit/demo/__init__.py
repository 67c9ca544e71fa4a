"""``slimkit demo``: the whole pipeline on the built-in digits CNN (``run``), stage by stage
(``stages``)."""

from slimkit.demo.run import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
