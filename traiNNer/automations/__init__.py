"""Training automations: each observes training signals and returns decisions.

`AutomationController` (controller.py) is what the trainer uses; `DecisionLog`
(decision_log.py) records every decision; `registry.py` explains how an automation
module registers itself.
"""
