"""``edgeopt tune``: find the recipe that meets an accuracy budget (search core in ``search``).

The command, report and Pareto plot are wired on top of the shared evaluator
(``edgeopt.evaluate``) and executors (``edgeopt.executors``); ``search`` only needs a callable
that evaluates recipes.
"""
