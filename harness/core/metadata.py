"""``metadata`` of the manifests a scenario applies, checked as the API server checks
an ObjectMeta: the fields it knows, labels and annotations as string maps with
valid keys, and the size limit of annotations.

Sources (kubernetes/kubernetes): the ObjectMeta type
(staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go); its validation
(staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go:
``ValidateAnnotations`` checks each key as a qualified name and
``TotalAnnotationSizeLimitB`` = 256 KiB over keys and values; labels by
``ValidateLabels``); an annotation value that is not a string is refused when the
object is decoded (a map[string]string). Unknown fields fail under kubectl's
default strict field validation (``--validate=strict``, Kubernetes 1.27 and later).
Fields that ``kubectl get -o yaml`` prints (uid, resourceVersion, managedFields...)
are known fields, so a manifest copied from a cluster is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from harness.core.selectors import check_label_key, check_label_value

#: The fields of ObjectMeta (apimachinery meta/v1 types.go), by their JSON names.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
#: ``TotalAnnotationSizeLimitB``: keys and values of all annotations together.
ANNOTATIONS_LIMIT = 256 * 1024

#: How a parser reports a problem: (field path, what is wrong, what was expected).
Fail = Callable[[str, str, str], Exception]


def check_metadata(meta: Mapping[Any, Any], fail: Fail) -> None:
    """Raise ``fail(...)`` for the first problem of ``meta`` the API server would
    refuse (the name and namespace are each parser's own business)."""
    for key in meta:
        if key not in OBJECT_META_FIELDS:
            raise fail(
                f"metadata.{key}",
                "unknown field",
                "a field of metadata: " + ", ".join(sorted(OBJECT_META_FIELDS)),
            )
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise fail("metadata.labels", f"got {type(labels).__name__}", "a mapping of label keys to string values")
        for key, value in labels.items():
            problem = check_label_key(key) or check_label_value(value)
            if problem:
                raise fail(f"metadata.labels.{key}", problem, "a valid label")
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, Mapping):
            raise fail("metadata.annotations", f"got {type(annotations).__name__}", "a mapping of keys to string values")
        total = 0
        for key, value in annotations.items():
            problem = check_label_key(key)
            if problem:
                raise fail(f"metadata.annotations.{key}", problem.replace("label key", "annotation key"), "a qualified name")
            if not isinstance(value, str):
                raise fail(
                    f"metadata.annotations.{key}",
                    f"got {type(value).__name__}",
                    "a string (quote numbers and booleans in YAML)",
                )
            total += len(key) + len(value)
            if total > ANNOTATIONS_LIMIT:
                raise fail(
                    "metadata.annotations",
                    f"the annotations are more than {ANNOTATIONS_LIMIT // 1024} KiB",
                    f"at most {ANNOTATIONS_LIMIT} bytes of keys and values in all",
                )
