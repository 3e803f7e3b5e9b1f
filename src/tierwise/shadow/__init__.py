"""Shadow evaluation: how often a cheaper tier's answer is as good as the reference tier's, on
this deployment's own traffic, judged by a model (issue 14, item 2).

Off by default; ``[shadow] enabled = true`` (or ``TIERWISE_SHADOW=true``) turns it on for
``tierwise serve``. The pieces:

* :mod:`tierwise.shadow.runner`: sampling (the gateway's capture), the bounded queue and the
  background comparisons, and :func:`~tierwise.shadow.runner.attach`, which wires them into a
  :class:`~tierwise.gateway.app.Gateway`;
* :mod:`tierwise.shadow.judge`: the rubric, the judge's prompt and its strict reply format;
* :mod:`tierwise.shadow.budget`: the daily budget, held before and settled after each
  comparison.

The verdicts land in the ledger's ``shadow_verdicts`` table; ``tierwise report --quality`` and
the dashboard show "quality retained" per tier from them (:func:`tierwise.quality.shadow_quality`),
and ``tierwise train --from-ledger`` learns from them. Nothing here is imported by
``import tierwise`` or by a gateway with shadowing off.
"""
