"""Deploy the pipeline flow to a Prefect process work pool, so nightly runs execute on worker machines.

    python -m flows.deploy [--source PATH|GIT_URL] [--branch B] [--workdir DIR] [--git-token-env NAME]
                           [--pool finetune] [--name nightly] [--dask-address tcp://HOST:8786 ...] [--allow-unauthenticated]
                           [--cron "0 2 * * *"] [--timezone UTC] [--concurrency 2] [-S key=value ...]
    # then, on each machine that should run it, from the project's venv (`make worker` does this):
    prefect worker start --pool finetune

Against the server PREFECT_API_URL names (PREFECT_API_AUTH_STRING for its basic auth), this creates the
`process` work pool if it is missing (idempotent; a pool of that name and another type is an error) with a
LOCKED job template (locked_job_template: a run's job variables cannot change the command, working directory or
environment a worker starts it with; an existing pool's template is replaced by it) and deploys
`finetune-pipeline` FROM SOURCE (no image is built, nothing is pushed to a registry), with the cron
schedule and the run parameters (concurrency; -S overrides, validated by the params schema now and written
to the run's params.yaml by each run, as `python -m flows.pipeline -S` does). Deploying again with the same
name updates the deployment. Everything is checked (source, cron, time zone, -S, the server answering and
accepting the credentials) before anything is created. The source is where a worker gets the code:
- a local directory (default: the current one): the run's pull step is `set_working_directory` to that
  path, so the flow runs IN that checkout (its DVC cache and outputs stay there). Workers on other machines
  need the same path: a shared file system, or a checkout at the same path on each worker machine.
- a git URL (e.g. `git remote get-url origin`): each run clones it (`--depth 1`), then
  `dvc pull --run-cache --allow-missing` restores what the team pushed to the DVC remote (the committed
  .dvc/config must name a default remote), so unchanged stages are not recomputed. The clone lives in the
  process worker's per-run temporary folder, removed after the run, unless --workdir names a folder on the
  worker machines (created if missing) where the clone and its DVC cache are kept: later runs fetch and
  `git reset --keep`; where that refuses (a run's dvc.lock against a newer pushed one) Prefect re-clones.
  A private https repository: never put its token in the URL (the deployment's pull step stores the URL, readable
  by anyone with Prefect API access; such a URL is refused). --git-token-env NAME names an environment variable
  holding the token, read here for the clone that deploys and, in the pull step as `{{ $NAME }}`, from each
  worker's environment at run time; or give the worker machines a git credential helper or an SSH key.
Trust: anyone who can use the Prefect API can run code on every worker (edit a deployment's pull steps or the
pool's template; open-source Prefect has no per-user permissions), so a server without authentication is refused
unless --allow-unauthenticated (then warned about). The locked template closes the one route a run's own
parameters opened; dask_address (where a run sends its stages) must be one --dask-address allowed.
The flow runs with the worker's interpreter: start the worker from the project's venv (its bin first on PATH,
so the pull step's `dvc` and dvc.yaml's `python` are the venv's). Runs get telemetry off and the hub offline
(the pool template's fixed environment). The deployment's concurrency limit is 1: a run due while another is active waits
(AwaitingConcurrencySlot) for it, whichever worker takes it; a run is taken by exactly one worker.
The pull steps are not checked at run start: they run before any of the flow's code, so such a check could
only ever report an edit after it ran.
Limits: a git source's results stay in the worker's clone (and the Prefect UI's artifacts); publishing them
is `make push` there.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

from finetune.errors import UserError
from flows.ui import TELEMETRY_OFF

# isort: off
from flows.pipeline import DASK_ALLOWED, apply_overrides  # before prefect: it turns telemetry off, and `import prefect` starts its analytics
from prefect.runner.storage import GitRepository, LocalStorage
# isort: on

ENTRYPOINT = "flows/pipeline.py:pipeline"
RUN_ENV = {**TELEMETRY_OFF, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}  # as the Makefile exports


@contextlib.contextmanager
def connected_client(allow_unauthenticated: bool = False):
    """A sync client of the configured server, checked. Without PREFECT_API_URL Prefect would start a throwaway
    local server and deploy into it, so that is an error, as are a server that does not answer, one that
    refuses the credentials (its /health needs none, so that is not the probe) and, unless allowed, one that
    answers without any (see the module doc: its users can run code on the workers)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise UserError("PREFECT_API_URL is not set: point it at the Prefect server, e.g. export PREFECT_API_URL=http://SERVER:4200/api")
    with get_client(sync_client=True) as client:
        try:
            client.hello()
        except PrefectHTTPStatusError as error:
            status = error.response.status_code
            hint = "PREFECT_API_AUTH_STRING must be the server's PREFECT_SERVER_API_AUTH_STRING" if status == 401 else "is it a Prefect 3 server?"
            raise UserError(f"the Prefect API at {url} refused the request ({status} {error.response.reason_phrase}); {hint}") from None
        except (httpx.HTTPError, OSError) as error:
            raise UserError(f"the Prefect API at {url} does not answer ({type(error).__name__}: {error}); is the server up?") from None
        if httpx.get(f"{url.rstrip('/')}/hello", timeout=30).status_code != 401:  # the same request without credentials
            unauthenticated = (f"the Prefect API at {url} answers without authentication: anyone who can reach it can run any "
                               "command on every worker of this pool (through a deployment's pull steps or the pool's job template)")
            if not allow_unauthenticated:
                raise UserError(f"{unauthenticated}. Start the server with PREFECT_SERVER_API_AUTH_STRING (and give the same "
                                "string as PREFECT_API_AUTH_STRING here and on the workers), or pass --allow-unauthenticated "
                                "where only trusted users can reach it")
            print(f"WARNING: {unauthenticated}; deploying anyway (--allow-unauthenticated)", file=sys.stderr)
        yield client


def locked_job_template(dask_addresses: list[str]) -> dict:
    """Prefect's process job template with the command, working directory and environment fixed rather than job
    variables: with the default template a flow run created through the API could set `command` (any shell command
    on the worker), `working_dir` and `env`. Left variable: the process's name, labels and output streaming. The
    environment: telemetry off, the hub offline, and the Dask schedulers a run may use (DASK_ALLOWED)."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["job_configuration"] |= {"command": None, "working_dir": None, "env": {**RUN_ENV, DASK_ALLOWED: " ".join(dask_addresses)}}
    for name in ("command", "working_dir", "env"):
        del template["variables"]["properties"][name]
    return template


def ensure_pool(client, name: str, template: dict) -> str:
    """The process work pool `name` with this job template: 'created', 'locked' (its template replaced) or 'exists'."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type=ProcessWorker.type, base_job_template=template))
        return "created"
    if pool.type != ProcessWorker.type:
        raise UserError(f"work pool {name!r} exists with type {pool.type!r}; expected {ProcessWorker.type!r} (pass another --pool)")
    if pool.base_job_template != template:
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
        return "locked"
    return "exists"


def is_git_url(source: str) -> bool:
    """Not Prefect's create_storage_from_source guess: it takes an https URL without `.git` for fsspec storage."""
    parsed = urlparse(source)
    return parsed.scheme in ("git", "ssh", "http", "https", "file") or source.endswith(".git")


def check_git_source(source: str, branch: str | None, token_env: str | None) -> None:
    """Refuse what git would take as an option, and credentials in the URL (it is stored in the pull step)."""
    for name, value in (("--source", source), ("--branch", branch)):
        if value and value.startswith("-"):
            raise UserError(f"{name} {value!r} starts with '-': git would read it as an option")
    parsed = urlparse(source)
    if parsed.password is not None or (parsed.username is not None and parsed.scheme in ("http", "https")):
        shown = f"{parsed.scheme}://***@{parsed.netloc.rpartition('@')[2]}{parsed.path}"
        raise UserError(f"--source {shown}: credentials in a git URL would be "
                        "stored in the deployment (readable through the Prefect API); remove them and pass --git-token-env "
                        "NAME (an environment variable holding the token, on this machine and the workers)")
    if token_env is None:
        return
    if parsed.scheme != "https":
        raise UserError(f"--git-token-env applies to an https git source; {source} is not one (ssh uses the workers' keys)")
    if not token_env.isidentifier() or not os.environ.get(token_env):
        raise UserError(f"--git-token-env {token_env}: expected the name of a set environment variable holding the token")


class DvcPulledGitRepository(GitRepository):
    """A git source: cloned (in `keep_in` when given, so the clone and its DVC cache outlive the run), then
    `dvc pull` restores what the team pushed to the DVC remote. A token (token_env) clones here from this
    process's environment; the pull step holds only the variable's name."""

    def __init__(self, url: str, branch: str | None, keep_in: str | None, token_env: str | None = None):
        credentials = {"access_token": os.environ[token_env]} if token_env else None
        super().__init__(url, branch=branch, credentials=credentials)
        self.keep_in, self.token_env = keep_in, token_env

    def to_pull_step(self) -> list[dict]:
        steps = "prefect.deployments.steps"
        clone = GitRepository(self._url, branch=self._branch).to_pull_step()  # without the token's value
        clone[f"{steps}.git_clone"]["id"] = "clone"
        if self.token_env:
            clone[f"{steps}.git_clone"]["access_token"] = f"{{{{ ${self.token_env} }}}}"  # Prefect reads it from the worker's env
        # the clone's folder stays the run's working directory: this step neither returns nor enters another
        restore = {f"{steps}.run_shell_script": {"script": "dvc pull --run-cache --allow-missing", "directory": "{{ clone.directory }}"}}
        if not self.keep_in:
            return [clone, restore]
        # pull steps rather than the process worker's `working_dir`, which crashes the run ("Child exited without
        # calling task_status.started()") where that folder does not exist yet
        keep = [{f"{steps}.run_shell_script": {"script": f"mkdir -p {shlex.quote(self.keep_in)}"}},
                {f"{steps}.set_working_directory": {"directory": self.keep_in}}]
        return [*keep, clone, restore]


def storage(source: str, branch: str | None, workdir: str | None, token_env: str | None = None):
    """Prefect runner storage for the source: a local project folder, or a git repository (see the module doc)."""
    if not is_git_url(source):
        root = Path(source).expanduser().resolve()
        missing = [name for name in ("dvc.yaml", ENTRYPOINT.split(":")[0]) if not (root / name).is_file()]
        if missing:
            raise UserError(f"--source {source}: not the project (no {', '.join(missing)} in {root}); expected its folder or a git URL")
        for name, value in (("--branch", branch), ("--workdir", workdir), ("--git-token-env", token_env)):
            if value:
                raise UserError(f"{name} applies to a git source only (a local source runs in its own folder)")
        return LocalStorage(str(root))
    check_git_source(source, branch, token_env)
    if workdir and not Path(workdir).is_absolute():
        raise UserError(f"--workdir {workdir}: expected an absolute path (it names a folder on the worker machines)")
    return DvcPulledGitRepository(source, branch, workdir, token_env)


def schedule(cron: str, timezone: str):
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)  # checked here, before anything is created
    except ValidationError as error:
        raise UserError(f"--cron {cron!r} --timezone {timezone!r}: {error.errors()[0]['msg']}") from None
    from prefect.schedules import Cron

    return Cron(cron, timezone=timezone)


def deploy(source: str, pool: str, name: str, cron: str, timezone: str = "UTC", concurrency: int = 2,
           overrides: list[str] | None = None, branch: str | None = None, workdir: str | None = None,
           token_env: str | None = None, dask_addresses: list[str] | None = None, allow_unauthenticated: bool = False):
    """Validate everything, ensure the pool, deploy; the deployment's id."""
    from prefect import Flow

    if concurrency < 1:
        raise UserError(f"--concurrency {concurrency}: expected 1 or more")
    for address in dask_addresses or []:
        if not re.fullmatch(r"(tcp|tls)://[\w.\-\[\]:]+", address):
            raise UserError(f"--dask-address {address!r}: expected a Dask scheduler address, tcp://HOST:PORT or tls://HOST:PORT")
    runner_storage = storage(source, branch, workdir, token_env)
    git = is_git_url(source)
    # -S is checked against the local project: the source folder, or the checkout deploying a git source
    apply_overrides(Path.cwd() if git else runner_storage.destination, overrides or [], write=False)
    when = schedule(cron, timezone)
    parameters = {"concurrency": concurrency, **({"overrides": overrides} if overrides else {})}
    try:  # a git source is cloned here, to read the flow's parameters
        flow = Flow.from_source(source=runner_storage, entrypoint=ENTRYPOINT)
    except RuntimeError as error:  # Prefect's message hides credentials already; the token is masked again regardless
        message = str(error).replace(os.environ[token_env], "***") if token_env else str(error)
        raise UserError(f"--source {source}: {message}") from None
    with connected_client(allow_unauthenticated) as client:
        state = ensure_pool(client, pool, locked_job_template(dask_addresses or []))
    print(f"work pool {pool!r}: {state} (type process, locked job template)")
    return flow.deploy(name=name, work_pool_name=pool, schedules=[when], parameters=parameters, concurrency_limit=1,
                       build=False, push=False, print_next_steps=False, ignore_warnings=True)  # its one warning recommends .serve for local development


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=".", help="the project folder (same path on the workers) or its git URL (default: %(default)s)")
    parser.add_argument("--branch", help="a git source's branch (default: the remote's default branch)")
    parser.add_argument("--workdir", help="a git source: folder on the worker machines where the clone is kept between runs")
    parser.add_argument("--git-token-env", metavar="NAME", help="an https git source: the environment variable holding its "
                        "token, here and on the workers (never the token in the URL)")
    parser.add_argument("--pool", default="finetune", help="process work pool, created if missing (default: %(default)s)")
    parser.add_argument("--name", default="nightly", help="deployment name (default: %(default)s)")
    parser.add_argument("--cron", default="0 2 * * *", help="schedule (default: %(default)s)")
    parser.add_argument("--timezone", default="UTC", help="the cron's IANA time zone (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2, help="the flow's concurrency parameter (default: %(default)s)")
    parser.add_argument("--dask-address", dest="dask_addresses", action="append", default=[], metavar="tcp://HOST:8786",
                        help="a Dask scheduler the pool's runs may send their stages to (the flow's dask_address); repeatable")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="deploy to a Prefect server without authentication (anyone reaching it can run commands on the workers)")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a param override every run applies (validated now by the params schema)")
    args = parser.parse_args(argv)
    try:
        deployment_id = deploy(args.source, args.pool, args.name, args.cron, args.timezone, args.concurrency, args.overrides,
                               args.branch, args.workdir, args.git_token_env, args.dask_addresses, args.allow_unauthenticated)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"deployment finetune-pipeline/{args.name} ({deployment_id}), cron {args.cron!r} {args.timezone}; "
          f"on each worker machine, from the project's venv: prefect worker start --pool {args.pool}")


if __name__ == "__main__":
    main()
