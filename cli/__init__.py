"""The top floor: the ``coldstart`` console script (each folder's sub-app mounted) and the demo."""
