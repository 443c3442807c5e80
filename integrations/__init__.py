"""Thin adapters between metahp's meta-policies and training frameworks (shipped as metahp.integrations).

Each adapter lives in its own module and is imported lazily, so importing metahp never imports a framework.
"""
