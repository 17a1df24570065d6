r"""What a model was trained on, and whether given data is the same.

A checkpoint stores :func:`data_identity` of its training data under the key
``'data'``: the number of embedding rows, the SHA-256 of the item-id mapping
(``item_ids.json`` of a prepared folder, or ``None`` for contiguous ids), and
the data fingerprint of :func:`~tagnn_pyg.data.read_srgnn_folder` (SHA-256 over
the files read). :func:`identity_differences` lists what differs from given
data; ``evaluate`` and ``recommend`` refuse any difference unless told
``--allow-other-data``.

Only the standard library is imported.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence


def item_ids_digest(item_ids: Optional[Sequence[Any]]) -> Optional[str]:
    """SHA-256 of an item-id mapping (ids compared as strings; ``None`` stays
    ``None``, the padding id), or ``None`` without a mapping.

    Args:
        item_ids (list, optional): original id of each internal id.

    Returns:
        str or None
    """
    if item_ids is None:
        return None
    canonical = json.dumps([None if v is None else str(v) for v in item_ids])
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()


def data_identity(num_items: int, item_ids: Optional[Sequence[Any]] = None,
                  fingerprint: Optional[str] = None,
                  source: Optional[str] = None) -> Dict[str, Any]:
    """The record stored in checkpoints as ``'data'``.

    Args:
        num_items (int): embedding rows, padding included.
        item_ids (list, optional): the item-id mapping.
        fingerprint (str, optional): the data fingerprint
            (:attr:`~tagnn_pyg.data.SRGNNData.fingerprint`).
        source (str, optional): where the data came from (informative only).

    Returns:
        dict: ``num_items``, ``item_ids_sha256``, ``fingerprint``, ``source``.
    """
    return {'num_items': int(num_items), 'item_ids_sha256': item_ids_digest(item_ids),
            'fingerprint': fingerprint, 'source': source}


def _short(digest: Optional[str]) -> str:
    return 'none' if digest is None else digest[:12]


def identity_differences(trained: Mapping[str, Any], given: Mapping[str, Any]
                         ) -> List[str]:
    """What differs between the data a model was trained on and given data.

    A fingerprint missing on either side is not compared.

    Args:
        trained (dict): :func:`data_identity` from the checkpoint.
        given (dict): :func:`data_identity` of the data at hand.

    Returns:
        list of str: one phrase per difference (empty: the same data).
    """
    out = []
    if int(trained.get('num_items', -1)) != int(given.get('num_items', -1)):
        out.append(f"item count {trained.get('num_items')} (checkpoint) vs "
                   f"{given.get('num_items')} (data)")
    a, b = trained.get('item_ids_sha256'), given.get('item_ids_sha256')
    if (a is None) != (b is None):
        side = 'the checkpoint' if a is not None else 'the data'
        out.append(f"only {side} has an item-id mapping")
    elif a != b:
        out.append(f"item-id mappings differ ({_short(a)} vs {_short(b)})")
    fa, fb = trained.get('fingerprint'), given.get('fingerprint')
    if fa is not None and fb is not None and fa != fb:
        out.append(f"data fingerprint {_short(fa)} (checkpoint, from "
                   f"{trained.get('source')}) vs {_short(fb)} (data)")
    return out


__all__ = ['item_ids_digest', 'data_identity', 'identity_differences']
