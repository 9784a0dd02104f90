"""`instructrec tpu`: create Cloud TPU VMs, install the project, launch gin runs, follow them.

Every subcommand checks its arguments completely before the first gcloud call, and `--dry-run`
prints the exact command sequence instead of running it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
from pathlib import Path
from typing import Sequence, TextIO

from instructrec_jax.tpu.accelerators import AcceleratorType, parse_accelerator_type
from instructrec_jax.tpu.deployment import DescribeError, Deployment, Step, parse_describe
from instructrec_jax.tpu.errors import GcloudNotFound, TpuUsageError
from instructrec_jax.tpu.gcloud import Gcloud, TpuVm, check_worker
from instructrec_jax.tpu.remote import (
    InstallSource,
    RemoteLayout,
    RunSpec,
    logs_command,
    parse_probe_output,
    probe_command,
    stop_command,
)
from instructrec_jax.tpu.watch import recovery_steps, watch

PROGRAM = "instructrec tpu"
MODULES = {"train": "instructrec_jax.train", "eval": "instructrec_jax.evaluate", "watch": "instructrec_jax.train"}
_GIT_URL = re.compile(r"^(https?://|ssh://|git://|git@[^:]+:)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (gin's `--gin.X=V` words are taken out before it)."""
    from instructrec_jax.gin_flags import add_gin_arguments

    parser = argparse.ArgumentParser(prog=PROGRAM, allow_abbrev=False, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--name", default=os.environ.get("INSTRUCTREC_TPU_NAME"),
                        help="TPU VM name (default $INSTRUCTREC_TPU_NAME)")
    common.add_argument("--zone", default=os.environ.get("CLOUDSDK_COMPUTE_ZONE"),
                        help="zone, e.g. us-central2-b (default $CLOUDSDK_COMPUTE_ZONE)")
    common.add_argument("--project", default=None, help="Google Cloud project (default: gcloud's)")
    common.add_argument("--dry-run", action="store_true", help="print the gcloud commands, run nothing")

    create = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    create.add_argument("--accelerator-type", help="e.g. v4-32, v5p-8, v5litepod-16, v6e-8")
    create.add_argument("--version", default=None,
                        help="TPU runtime version (default per generation, e.g. tpu-ubuntu2204-base for v4)")
    kind = create.add_mutually_exclusive_group()
    kind.add_argument("--spot", action="store_true", help="a spot VM (cheaper, can be preempted)")
    kind.add_argument("--preemptible", action="store_true", help="a preemptible VM (legacy spot)")

    layout = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    defaults = RemoteLayout()
    layout.add_argument("--remote-dir", default=defaults.project_dir,
                        help="project folder on each worker, relative to its home")
    layout.add_argument("--venv", default=defaults.venv, help="virtualenv on each worker, relative to home")
    layout.add_argument("--log-dir", default=defaults.log_dir, help="run logs on each worker, relative to home")
    layout.add_argument("--python", default=defaults.python, help="interpreter that builds the virtualenv")

    source = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    source.add_argument("--git", dest="git_url", help="git URL the workers clone the project from")
    source.add_argument("--branch", help="branch or tag to clone (default: the repository's default)")
    source.add_argument("--sdist", help="local source distribution (.tar.gz) uploaded to the workers instead")
    source.add_argument("--after-setup", default="", metavar="COMMAND",
                        help="shell command run on every worker after installing, in the project folder "
                             "with the virtualenv first on PATH (e.g. `instructrec prepare …`)")
    source.add_argument("--jax-version", default=None,
                        help="jax[tpu] version to install (default: the project's pinned jax)")

    run = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    run.add_argument("--run", dest="run_name", help="run name: log ~/LOG_DIR/RUN.log (default from MODEL_DIR)")
    run.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                     help="environment variable for the run on every worker (repeatable)")
    run.add_argument("--worker", default="all", help="workers that run it (default all)")
    add_gin_arguments(run)

    follow = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    follow.add_argument("--poll-interval", type=float, default=60.0, help="seconds between checks")
    follow.add_argument("--max-restarts", type=int, default=10, help="give up after this many recoveries")

    sub.add_parser("create", parents=[common, create], help="create a TPU VM")
    sub.add_parser("setup", parents=[common, layout, source],
                   help="install the project and jax[tpu] on every worker")
    for name, text in (("train", "launch a gin training run on every worker"),
                       ("eval", "launch an evaluation on every worker")):
        p = sub.add_parser(name, parents=[common, create, layout, source, run, follow], help=text,
                           epilog="Everything after `--` is passed to the program unchanged; "
                                  "--gin.NAME=VALUE words are passed as given.")
        p.add_argument("--create", action="store_true", help="create the TPU VM first (implies --setup)")
        p.add_argument("--setup", action="store_true", help="install the project (--git/--sdist) first")
        p.add_argument("--watch", action="store_true", help="then watch it and re-launch after preemptions")
    sub.add_parser("watch", parents=[common, create, layout, source, run, follow],
                   help="watch a launched training run and re-launch it after preemptions")

    logs = sub.add_parser("logs", parents=[common], help="print the end of a run's log")
    logs.add_argument("--run", dest="run_name", required=True)
    logs.add_argument("--worker", default="0", help="worker index, or all (default 0)")
    logs.add_argument("--lines", type=int, default=100)
    logs.add_argument("--follow", action="store_true", help="keep printing new lines (tail -F)")
    logs.add_argument("--log-dir", default=defaults.log_dir)

    ssh = sub.add_parser("ssh", parents=[common], help="open a shell (or run --command) on workers",
                         epilog="Arguments after `--` go to `gcloud compute tpus tpu-vm ssh`.")
    ssh.add_argument("--worker", default="0", help="worker index, or all (default 0)")
    ssh.add_argument("--command", dest="remote_command", help="command to run instead of a shell")

    scp = sub.add_parser("scp", parents=[common], help="copy files to or from workers",
                         epilog="Write a path on the workers as :PATH (or NAME:PATH), e.g. "
                                "`scp data.tar.gz :data.tar.gz`.")
    scp.add_argument("paths", nargs="+", metavar="PATH", help="sources then destination")
    scp.add_argument("--worker", default=None, help="default: all for uploads, 0 for downloads")
    scp.add_argument("--recurse", action="store_true")

    stop = sub.add_parser("stop", parents=[common], help="stop a run on the workers")
    stop.add_argument("--run", dest="run_name", required=True)
    stop.add_argument("--worker", default="all")
    stop.add_argument("--log-dir", default=defaults.log_dir)

    delete = sub.add_parser("delete", parents=[common], help="delete the TPU VM")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    status = sub.add_parser("status", parents=[common], help="state, health, preemption, run state")
    status.add_argument("--run", dest="run_name", default=None, help="also report this run on each worker")
    status.add_argument("--worker", default="all")
    status.add_argument("--log-dir", default=defaults.log_dir)
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Separates (own arguments, `--gin.X=V` words, words after `--`)."""
    argv = list(argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    own = [word for word in argv if not word.startswith("--gin.")]
    gin_words = [word for word in argv if word.startswith("--gin.")]
    for word in gin_words:
        name, sep, _ = word[len("--gin."):].partition("=")
        if not sep or not name:
            raise TpuUsageError(f"{word!r}: expected --gin.NAME=VALUE, e.g. --gin.TRAIN_STEPS=1000")
    return own, gin_words, passthrough


def _vm(args: argparse.Namespace) -> TpuVm:
    if not args.name:
        raise TpuUsageError("--name is required (the TPU VM name), or set INSTRUCTREC_TPU_NAME")
    return TpuVm(args.name, args.zone, args.project)


def _accelerator(args: argparse.Namespace) -> AcceleratorType:
    if not args.accelerator_type:
        raise TpuUsageError("--accelerator-type is required, e.g. --accelerator-type=v4-32")
    return parse_accelerator_type(args.accelerator_type)


def _layout(args: argparse.Namespace) -> RemoteLayout:
    return RemoteLayout(project_dir=getattr(args, "remote_dir", RemoteLayout.project_dir),
                        venv=getattr(args, "venv", RemoteLayout.venv), log_dir=args.log_dir,
                        python=getattr(args, "python", RemoteLayout.python))


def project_jax_version() -> str:
    """The jax version instructrec-jax pins (what the workers must install as jax[tpu])."""
    try:
        for requirement in importlib.metadata.requires("instructrec-jax") or []:
            match = re.match(r"^jax\s*==\s*([0-9][^;,\s]*)", requirement)
            if match:
                return match.group(1)
    except importlib.metadata.PackageNotFoundError:
        pass
    return importlib.metadata.version("jax")


def _source(args: argparse.Namespace, *, required: bool) -> InstallSource | None:
    if args.git_url and args.sdist:
        raise TpuUsageError("give either --git or --sdist, not both")
    if args.after_setup and not (args.git_url or args.sdist):
        raise TpuUsageError("--after-setup runs after installing: it needs --git or --sdist")
    if args.branch and not args.git_url:
        raise TpuUsageError("--branch needs --git")
    if args.git_url:
        if not _GIT_URL.match(args.git_url):
            raise TpuUsageError(f"--git={args.git_url!r}: expected a URL the workers can clone "
                                "(https://…, ssh://… or git@host:…); for a local checkout build an sdist "
                                "(`python setup.py sdist`) and pass --sdist=dist/….tar.gz")
        return InstallSource(git_url=args.git_url, branch=args.branch)
    if args.sdist:
        if not args.sdist.endswith(".tar.gz"):
            raise TpuUsageError(f"--sdist={args.sdist!r}: expected a .tar.gz source distribution")
        if not Path(args.sdist).is_file():
            raise TpuUsageError(f"--sdist={args.sdist!r}: no such file")
        return InstallSource(sdist=args.sdist)
    if required:
        raise TpuUsageError("say where the workers get the project: --git=URL [--branch=B] or "
                            "--sdist=dist/instructrec-jax-….tar.gz")
    return None


def _gin_binding_value(bindings: Sequence[str], macro: str) -> str | None:
    """The last value bound to `macro` on the command line, without its quotes."""
    value = None
    for binding in bindings:
        name, sep, raw = binding.partition("=")
        if sep and name.strip() == macro:
            value = raw.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
    return value


def _remote_gin_file(name: str, search_paths: Sequence[str]) -> str:
    """Checks a gin file exists here and returns how the workers (cwd = project folder) name it."""
    from instructrec_jax.gin_flags import CHECKOUT_ROOT, GinConfigError, resolve_gin_file

    try:
        local = Path(resolve_gin_file(name, search_paths)).resolve()
    except GinConfigError as error:
        raise TpuUsageError(f"--gin_file={name}: {error}") from None
    try:
        return local.relative_to(CHECKOUT_ROOT.resolve()).as_posix()
    except ValueError:
        raise TpuUsageError(
            f"--gin_file={name}: {local} is outside the project checkout ({CHECKOUT_ROOT}), so the "
            "workers do not have it; put it under gin/ (e.g. gin/experiments/) and install from there, "
            "or copy it with `instructrec tpu scp` and pass it after `--`") from None


def _run_spec(args: argparse.Namespace, gin_words: list[str], passthrough: list[str],
              accelerator: AcceleratorType, spot_like: bool) -> RunSpec:
    from instructrec_jax.gin_flags import gin_flags_from_args, rewrite_gin_args

    flags = gin_flags_from_args(args)
    bindings = [word.partition("=")[2] for word in rewrite_gin_args(gin_words)] + list(args.gin_bindings)
    files = [_remote_gin_file(name, flags.search_paths) for name in args.gin_file]
    if not files:
        raise TpuUsageError("--gin_file is required, e.g. --gin_file=gin/models/flan_t5_xl.gin "
                            "--gin_file=gin/runs/finetune.gin")
    run_name = args.run_name
    if args.command in ("train", "watch"):
        model_dir = _gin_binding_value(bindings, "MODEL_DIR")
        if not model_dir:
            raise TpuUsageError('--gin.MODEL_DIR=\\"gs://BUCKET/PATH\\" is required: the trainer writes '
                                "its checkpoints there and resumes from them")
        if not model_dir.startswith("gs://"):
            if accelerator.hosts > 1:
                raise TpuUsageError(
                    f"MODEL_DIR={model_dir!r} is not on gs://: a {accelerator.name} slice has "
                    f"{accelerator.hosts} hosts that write one checkpoint together, so MODEL_DIR must be a "
                    'Cloud Storage path every host sees, e.g. --gin.MODEL_DIR=\\"gs://my-bucket/runs/xl\\"')
            if spot_like and (args.command == "watch" or args.watch):
                raise TpuUsageError(
                    f"MODEL_DIR={model_dir!r} is not on gs://: a preempted spot VM is deleted with its "
                    "disk, so --watch could not resume; use a gs:// MODEL_DIR")
        run_name = run_name or _run_name_from_path(model_dir)
    else:
        target = _gin_binding_value(bindings, "EVAL_OUTPUT_DIR") or _gin_binding_value(bindings, "CHECKPOINT_PATH")
        if not run_name and not target:
            raise TpuUsageError("--run is required (name of the log file on the workers)")
        run_name = run_name or "eval-" + _run_name_from_path(target)
    env = []
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise TpuUsageError(f"--env {item!r}: expected NAME=VALUE")
        env.append((key, value))
    program_args = [f"--gin_file={f}" for f in files]
    program_args += [f"--gin_search_paths={p}" for p in args.gin_search_paths]
    program_args += gin_words + [f"--gin_bindings={b}" for b in args.gin_bindings] + passthrough
    return RunSpec(run_name, MODULES[args.command], tuple(program_args), tuple(env))


def _run_name_from_path(path: str) -> str:
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")
    return name or "run"


def _deployment(args: argparse.Namespace, gin_words: list[str], passthrough: list[str]) -> Deployment:
    vm = _vm(args)
    accelerator = _accelerator(args)
    spot_like = args.spot or args.preemptible
    # A source is needed to install now (--create/--setup) or on a recreated VM (watch).
    needs_source = args.command == "watch" or any(getattr(args, f, False) for f in ("watch", "create", "setup"))
    source = _source(args, required=needs_source)
    run = _run_spec(args, gin_words, passthrough, accelerator, spot_like)
    return Deployment(vm=vm, accelerator=accelerator,
                      runtime_version=args.version or accelerator.default_runtime,
                      spot=args.spot, preemptible=args.preemptible, layout=_layout(args), source=source,
                      jax_version=args.jax_version or project_jax_version(),
                      after_setup=args.after_setup, run=run,
                      run_worker=check_worker(args.worker))


def _run_steps(gcloud: Gcloud, steps: list[Step]) -> int:
    for step, argv in steps:
        status = gcloud.run(argv, step)
        if status != 0:
            gcloud.note(f"stopped: the last command exited with status {status}")
            return status
    return 0


def _launch(args: argparse.Namespace, gin_words: list[str], passthrough: list[str], out: TextIO) -> int:
    deployment = _deployment(args, gin_words, passthrough)
    poll, max_restarts = args.poll_interval, args.max_restarts
    if poll < 0 or max_restarts < 0:
        raise TpuUsageError("--poll-interval and --max-restarts must be >= 0")
    watching = args.command == "watch" or args.watch
    steps: list[Step] = []
    if args.command != "watch":
        if args.create:
            steps += deployment.create_steps()
        if args.create or args.setup:
            steps += deployment.setup_steps()
        steps += deployment.launch_steps()
    gcloud = Gcloud(dry_run=args.dry_run, out=out)
    status = _run_steps(gcloud, steps)
    if status != 0 or not watching:
        return status
    if args.dry_run:
        _print_watch_plan(gcloud, deployment, poll)
        return 0
    return watch(deployment, gcloud, poll_interval=poll, max_restarts=max_restarts)


def _print_watch_plan(gcloud: Gcloud, deployment: Deployment, poll: float) -> None:
    gcloud.note(f"watch: every {poll:g} s, ask for the VM state and, when READY, the run's state on each worker:")
    gcloud.run(deployment.vm.describe())
    gcloud.run(deployment.probe_argv())
    for action, when in (("recreate", "the VM is PREEMPTED, TERMINATED or STOPPED"),
                         ("relaunch", "the run is missing or failed on a worker")):
        gcloud.note(f"watch: when {when}:")
        for _, argv in recovery_steps(deployment, action):
            gcloud.run(argv)
    gcloud.note("watch: exit 0 when the run has exited 0 on every worker")


def _scp_paths(args: argparse.Namespace) -> tuple[list[str], str, str]:
    if len(args.paths) < 2:
        raise TpuUsageError("scp needs at least one source and a destination")

    def remote(path: str) -> str | None:
        if path.startswith(":"):
            return f"{args.name}:{path[1:]}"
        if path.startswith(f"{args.name}:"):
            return path
        return None

    *sources, destination = args.paths
    remote_sources = [remote(s) for s in sources]
    remote_destination = remote(destination)
    if remote_destination is not None:
        if any(r is not None for r in remote_sources):
            raise TpuUsageError("scp copies between this machine and the workers: only one side may be remote")
        for source in sources:
            if not Path(source).exists():
                raise TpuUsageError(f"scp: {source}: no such file or directory here")
        return sources, remote_destination, check_worker(args.worker or "all")
    if not all(r is not None for r in remote_sources):
        raise TpuUsageError("scp: write paths on the workers as :PATH (or NAME:PATH); "
                            "one side must be on the workers")
    worker = args.worker or "0"
    if worker == "all" or not worker.isdigit():
        raise TpuUsageError("scp: downloads come from one worker; pass --worker=N")
    return [r for r in remote_sources if r is not None], destination, worker


def _status(args: argparse.Namespace, gcloud: Gcloud, vm: TpuVm, out: TextIO) -> int:
    layout = _layout(args)
    probe = vm.ssh(args.worker, probe_command(layout, args.run_name)) if args.run_name else None
    if args.dry_run:
        gcloud.run(vm.describe(), "state and health of the TPU VM")
        if probe:
            gcloud.run(probe, f"state of run {args.run_name} on each worker")
        return 0
    try:
        state = parse_describe(gcloud.capture(vm.describe()))
    except DescribeError as error:
        print(f"{PROGRAM} status: {error}", file=sys.stderr)
        return 1
    if state.state is None:
        print(f"{vm.name}: not found in {vm.zone}", file=out)
        return 1
    kind = "spot" if state.spot else "preemptible" if state.preemptible else "on-demand"
    print(f"{vm.name}: state {state.state}, health {state.health or 'unknown'}, "
          f"{state.accelerator_type or '?'} {kind}, preempted: "
          f"{'yes' if state.state == 'PREEMPTED' else 'no'}", file=out)
    if probe and state.state == "READY":
        result = gcloud.capture(probe)
        workers = parse_probe_output(result.stdout)
        if result.returncode != 0 and not workers:
            print(f"run {args.run_name}: workers did not answer ({result.stderr.strip()[:200]})", file=out)
            return 1
        for worker in workers:
            code = f" {worker.exit_code}" if worker.exit_code is not None else ""
            print(f"run {args.run_name} on {worker.host}: {worker.state}{code}", file=out)
    return 0


def run_command(argv: Sequence[str], out: TextIO) -> int:
    """Parses, checks and runs one `instructrec tpu` command; raises TpuUsageError/GcloudNotFound."""
    own, gin_words, passthrough = split_argv(argv)
    args = build_parser().parse_args(own)
    if gin_words and args.command not in MODULES:
        raise TpuUsageError(f"{gin_words[0]!r}: --gin.NAME=VALUE only applies to train, eval and watch")
    if passthrough and args.command not in (*MODULES, "ssh"):
        raise TpuUsageError("arguments after `--` only apply to train, eval, watch and ssh")
    if args.command in MODULES:
        return _launch(args, gin_words, passthrough, out)

    vm = _vm(args)
    if args.command == "create":
        accelerator = _accelerator(args)
        steps = Deployment(vm, accelerator, args.version or accelerator.default_runtime,
                           spot=args.spot, preemptible=args.preemptible).create_steps()
    elif args.command == "setup":
        layout = RemoteLayout(args.remote_dir, args.venv, args.log_dir, args.python)
        deployment = Deployment(vm, layout=layout, source=_source(args, required=True),
                                jax_version=args.jax_version or project_jax_version(),
                                after_setup=args.after_setup)
        steps = deployment.setup_steps()
    elif args.command == "logs":
        if args.lines < 1:
            raise TpuUsageError("--lines must be at least 1")
        RunSpec(args.run_name, "", ())  # checks the run name
        steps = [(None, vm.ssh(args.worker, logs_command(_layout(args), args.run_name, args.lines, args.follow)))]
    elif args.command == "ssh":
        steps = [(None, vm.ssh(args.worker, args.remote_command, tuple(passthrough)))]
    elif args.command == "scp":
        sources, destination, worker = _scp_paths(args)
        steps = [(None, vm.scp(sources, destination, worker, recurse=args.recurse))]
    elif args.command == "stop":
        RunSpec(args.run_name, "", ())
        steps = [(f"stop run {args.run_name}", vm.ssh(args.worker, stop_command(_layout(args), args.run_name)))]
    elif args.command == "delete":
        steps = [(None, vm.delete(quiet=args.yes))]
    elif args.command == "status":
        if args.run_name:
            RunSpec(args.run_name, "", ())
        check_worker(args.worker)
        return _status(args, Gcloud(dry_run=args.dry_run, out=out), vm, out)
    else:  # pragma: no cover - argparse only accepts the commands above
        raise TpuUsageError(f"unknown command {args.command!r}")
    return _run_steps(Gcloud(dry_run=args.dry_run, out=out), steps)


def main(argv: Sequence[str] | None = None) -> int:
    """`instructrec tpu …`; returns the exit status (2 for argument errors, 127 without gcloud)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_command(argv, sys.stdout)
    except TpuUsageError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    except GcloudNotFound as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 127
    except SystemExit as exit_:  # argparse: --help (0) or a malformed command line (2)
        return exit_.code if isinstance(exit_.code, int) else 2
