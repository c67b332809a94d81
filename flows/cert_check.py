"""Duty `cert-check`: every [[certificates]] target at once; HTTPS, or PostgreSQL's SSLRequest
then TLS. Findings: the chain verified (or the cause it was not) and the days until the earliest
expiry across the presented chain."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from maint.flows._duty import finish_duty, load_duty_config, page_run_failure, start_report, utcnow
from maint.certs import TlsProbe, assess_certificate
from maint.config import CertificateConfig
from maint.tasks import tls


@task(name="probe-certificates", cache_policy=NO_CACHE)
def probe_certificates(targets: list[CertificateConfig]) -> list[TlsProbe]:
    return tls.probe_all(targets)


@flow(name="cert-check", on_failure=[page_run_failure], on_crashed=[page_run_failure])
def cert_check(config_path: str | None = None) -> dict:
    """Weekly: certificates of HTTPS endpoints and PostgreSQL servers, chain, hostname, expiry.

    Args:
        config_path: The maint configuration file; empty means $MAINT_CONFIG on the machine
            that runs the flow, else ./maint.toml there.
    """
    config = load_duty_config(config_path, "cert-check")
    report = start_report("cert-check")
    now = utcnow()
    for target, probe in zip(config.certificates, probe_certificates(quote(config.certificates))):
        for finding in assess_certificate(probe, now, target.warning_days, target.critical_days):
            report.add(finding)
    return finish_duty(report, config)
