"""``$validate``: ``POST [base]/[type]/$validate`` and ``POST [base]/[type]/[id]/$validate``.

FHIR R4 Resource $validate (http://hl7.org/fhir/R4/resource-operation-validate.html): the body is
the resource, or a Parameters resource with ``resource``, ``mode`` (create | update | delete) and
``profile``. The verdict is exactly that of the write it stands for: the write is performed in a
store transaction that is then rolled back, so nothing is stored and no rule can differ. Warnings
from the R4 validator (``songkhoe.fhir.validate``) are added. The answer is 200 with an
OperationOutcome listing the issues (an error issue means the write would fail); a body that is
not a resource at all answers 400. Profiles other than the base R4 definitions are not checked
(a warning says so).
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir.outcome import FhirError, Issue, operation_outcome
from songkhoe.rest.exchange import Answer, Call

MODES = ("create", "update", "delete")


class _DryRun(Exception):
    """Raised inside the transaction to roll the write back."""


def _arguments(call: Call) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """(resource, mode, profiles) from the body and the query string."""
    body = call.body
    mode = call.param("mode")
    profiles = [v for k, v in call.params if k == "profile"]
    resource: dict[str, Any] | None = body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters" \
            and call.target.type != "Parameters":
        resource = None
        for i, p in enumerate(body.get("parameter") or []):
            if not isinstance(p, dict):
                raise FhirError(400, "Each Parameters.parameter must be an object",
                                code="structure", expression=f"Parameters.parameter[{i}]")
            name = p.get("name")
            if name == "resource":
                resource = p.get("resource")
                if not isinstance(resource, dict):
                    raise FhirError(400, "The 'resource' parameter must hold a resource",
                                    code="required",
                                    expression=f"Parameters.parameter[{i}].resource")
            elif name == "mode":
                mode = p.get("valueCode") or p.get("valueString")
            elif name == "profile":
                profiles.append(str(p.get("valueUri") or p.get("valueCanonical") or ""))
    if mode is not None and mode not in MODES:
        raise FhirError(400, f"mode must be create, update or delete; got {mode!r}",
                        code="invalid", expression="mode")
    return resource, mode, profiles


def validate(store: Any, call: Call) -> Answer:
    t = call.target
    assert t.type
    resource, mode, profiles = _arguments(call)
    if mode is None:
        mode = "update" if t.id else "create"
    if mode == "delete" and not t.id:
        raise FhirError(400, "mode=delete needs an instance: POST [type]/[id]/$validate",
                        code="invalid", expression="mode")
    if mode != "delete" and resource is None:
        raise FhirError(400, "$validate needs the resource to check, as the body or as the "
                             "'resource' parameter of a Parameters body", code="required")
    issues: list[Issue] = []
    if mode == "update" and resource is not None and t.id and resource.get("id") != t.id:
        issues.append(Issue("invalid", f"The resource's id {resource.get('id')!r} differs from "
                                       f"the id in the URL {t.id!r}", f"{t.type}.id"))
    else:
        issues.extend(_dry_run(store, t.type, t.id, resource, mode))
    if resource is not None and not any(i.severity in ("error", "fatal") for i in issues):
        issues.extend(_advice(resource, t.type))
    for profile in profiles:
        issues.append(Issue("not-supported", f"Profile {profile} was not checked: this server "
                                             "validates against the base R4 definitions only",
                            severity="warning"))
    return Answer(200, body=operation_outcome(issues))


def _dry_run(store: Any, rtype: str, id: str | None, resource: dict[str, Any] | None,
             mode: str) -> list[Issue]:
    try:
        with store.transaction(derive=False) as tx:
            if mode == "create":
                assert resource is not None
                if resource.get("resourceType") != rtype:
                    raise FhirError(400, f"The resource is a {resource.get('resourceType')} but "
                                         f"the URL is for {rtype}", code="invalid",
                                    expression="resourceType")
                tx.create(resource)
            elif mode == "update":
                assert resource is not None
                target = id or resource.get("id")
                if not isinstance(target, str):
                    raise FhirError(400, "mode=update needs the resource's id", code="required",
                                    expression=f"{rtype}.id")
                tx.update(rtype, target, resource)
            else:
                assert id is not None
                tx.read(rtype, id)
                tx.delete(rtype, id)
            raise _DryRun
    except _DryRun:
        return []
    except FhirError as err:
        return list(err.issues)


def _advice(resource: dict[str, Any], rtype: str) -> list[Issue]:
    """Warnings and information from the R4 validator (errors already came from the write)."""
    try:
        from songkhoe.fhir.validate import validate as r4_validate
    except ImportError:  # the validator is optional for advice
        return []
    return [i for i in r4_validate(resource, expected_type=rtype)
            if i.severity not in ("error", "fatal")]
