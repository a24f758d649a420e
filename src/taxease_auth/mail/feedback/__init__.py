"""SES feedback (DESIGN.md §10): events read from SQS, recorded against their mails, acted on.

``events`` parses SES's JSON (pure functions), ``effects`` decides what an event changes and
applies it in one transaction, ``consumer`` long-polls the queue, ``reputation`` keeps the
bounce and complaint rates.
"""
