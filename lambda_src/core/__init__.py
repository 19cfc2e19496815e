"""The pure core: planners, routing, schedules, slot layouts, instance facts, plain fleet data — no I/O.

May import only the standard library and other lambda_src.core modules.
"""
