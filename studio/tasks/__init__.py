"""Background tasks: dataset imports and re-cleans, exports and automatic metrics, each run by a worker process of
its own (``python -m studio.tasks.worker TASK_ID``) so the web process stays small and answers every page while
they run. ``service`` submits, starts, cancels and reaps them; ``kinds`` says what each kind runs; ``worker`` runs
one."""
