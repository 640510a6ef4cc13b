"""Test fixture: run SkyRL 0.3.0's own GRPO loop on a CPU (never part of the bandpo package).

`BasePPOExp` -> `RayPPOTrainer` -> FSDP2 `PolicyWorker` run as shipped; this module replaces only what assumes
a CUDA GPU and vLLM, through SkyRL's public hooks where it has them. Every process of a run imports it first
(the driver imports it; the experiment task and the policy workers are classes defined here, so Ray imports
this module before anything of theirs). Its import applies the process-level patches; each is listed with
the SkyRL code it stands in for (paths inside the installed `skyrl` package, 0.3.0):

Hooks (SkyRL's own extension points):
    - `BasePPOExp.get_inference_client` -> `HFRolloutClient`: SkyRL always starts vLLM HTTP servers
      (`inference_servers/setup.py`); here a Ray actor samples with the Hugging Face model in float32 and
      returns the sampled tokens' log-probs. It implements SkyRL's `InferenceEngineInterface`.
    - `BasePPOExp.get_tracker` -> `JsonlTracking`: SkyRL's console tracker, plus one JSON line per step
      (the metrics the test reads).
    - `RayPPOTrainer.build_models`, given `CpuPolicyWorker` (a subclass of SkyRL's `FSDPPolicyWorkerBase`).
    - `skyrl_gym.envs.register`: the env `bandpo_byte_mean` (reward: mean byte value of the response / 255, so
      the samples of a group differ and GRPO's advantages are non-zero).

`CpuPolicyWorker` overrides (SkyRL method -> what assumes CUDA):
    - `init_worker_process_group` (`workers/worker.py:119-133`): backend "cpu:gloo,cuda:nccl" (this torch
      has no NCCL) and `init_device_mesh("cuda")`; here gloo and a "cpu" mesh, otherwise the same code.
    - `init_weight_sync_state` / `broadcast_to_inference_engines` (`workers/fsdp/fsdp_worker.py:202,267`):
      NCCL broadcast or CUDA IPC through vLLM's weight-transfer engine (`weight_sync/broadcast_strategy.py:247`
      imports vLLM); here rank 0 sends the full float32 state dict to the rollout actor after every update.

Process-level patches (`install_cpu_patches`):
    - `flash_attn.bert_padding` (imported at `workers/model_wrapper.py:12`, used only with
      `remove_microbatch_padding`, which needs FlashAttention-2 and is off here): a stand-in module whose two
      functions raise if called, in `sys.modules` only while model_wrapper is imported (transformers would
      otherwise take it for an installed flash-attn and fail looking up its distribution).
    - `torch.cuda.current_device` -> cpu, `set_device` / `synchronize` -> no-ops, `device_count` -> 1: called
      unconditionally on SkyRL's path (`worker.py:844,1111,1191`, `fsdp_worker.py:127`, `fsdp_utils.py:52,83,249`,
      `fsdp_strategy.py:106,129,143`, `strategy.py:84,111`, `worker.py:333`). `torch.cuda.is_available()` stays
      False, so nothing else takes a CUDA path.
    - `fsdp_utils.init_device_mesh` ("cuda" -> "cpu", `fsdp_utils.py:256`) and `fsdp_utils._sync_non_persistent_buffers`
      (`fsdp_utils.py:125`: `.cuda()` before a broadcast; the same broadcast on the CPU tensor).
    - In the driver only, `ray.init` gains one logical "GPU" (SkyRL's `initialize_ray` calls `ray.init`
      without resources, and its actors ask for `num_gpus=1`; Ray finds no GPU here).

Settings the launch must give (`skyrl_cpu_run.py` passes them): `trainer.flash_attn=false`,
`trainer.remove_microbatch_padding=false`, `trainer.placement.colocate_all=false` (no sleep/wake of vLLM),
`trainer.enable_ray_gpu_monitor=false`, `trainer.gradient_checkpointing=false`, `generator.batched=true`,
`trainer.policy.fsdp_config.mixed_precision.param_dtype=fp32` (FSDP's default bf16 compute would make the
trainer's log-probs differ from the float32 rollout's by ~0.016).
"""

from __future__ import annotations

import functools
import importlib.machinery
import json
import os
import sys
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import ray
import torch

ENV_NAME = "bandpo_byte_mean"


# --- process-level patches --------------------------------------------------------------------------------------


def _import_model_wrapper_with_flash_attn_stand_in() -> None:
    """Import SkyRL's model_wrapper against a stand-in `flash_attn.bert_padding`, then drop the stand-in.

    transformers is imported first (its cached `is_flash_attn_*_available()` checks then see no flash_attn);
    the stand-in leaves `sys.modules` right after, so nothing later finds a module named flash_attn either.
    """
    import peft  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    def _unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "flash_attn stand-in (CPU test fixture): set trainer.remove_microbatch_padding=false"
        )

    package = types.ModuleType("flash_attn")
    package.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None, is_package=True)
    package.__path__ = []
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.__spec__ = importlib.machinery.ModuleSpec("flash_attn.bert_padding", None)
    padding.pad_input = padding.unpad_input = _unavailable
    package.bert_padding = padding
    if "flash_attn" in sys.modules:
        return
    sys.modules.update({"flash_attn": package, "flash_attn.bert_padding": padding})
    try:
        import skyrl.backends.skyrl_train.workers.model_wrapper  # noqa: F401
    finally:
        del sys.modules["flash_attn"], sys.modules["flash_attn.bert_padding"]


def _install_torch_cuda_stand_ins() -> None:
    # one function object per name: torch._dynamo's rule table refuses one object under two names
    def current_device() -> torch.device:
        return torch.device("cpu")

    def set_device(device: Any) -> None:
        return None

    def synchronize(device: Any = None) -> None:
        return None

    def device_count() -> int:
        return 1

    torch.cuda.current_device = current_device
    torch.cuda.set_device = set_device
    torch.cuda.synchronize = synchronize
    torch.cuda.device_count = device_count


def _install_fsdp_utils_patches() -> None:
    import torch.distributed as dist
    from skyrl.backends.skyrl_train.distributed import fsdp_utils

    real_init_device_mesh = fsdp_utils.init_device_mesh

    def init_device_mesh(device_type: str, *args: Any, **kwargs: Any):
        return real_init_device_mesh("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    def sync_non_persistent_buffers(model: torch.nn.Module, loaded_sd: dict) -> None:
        for module in model.modules():
            for key in sorted(getattr(module, "_non_persistent_buffers_set", set())):
                buf = module._buffers.get(key)
                if buf is None:
                    continue
                src = (
                    buf.detach().clone() if dist.get_rank() == 0 else torch.empty(buf.shape, dtype=buf.dtype)
                )
                dist.broadcast(src, src=0)
                module._buffers[key] = src

    fsdp_utils.init_device_mesh = init_device_mesh
    fsdp_utils._sync_non_persistent_buffers = sync_non_persistent_buffers


def _install_driver_ray_gpu() -> None:
    real_init = ray.init
    if getattr(real_init, "_bandpo_cpu_fixture", False):
        return

    @functools.wraps(real_init)
    def init(*args: Any, **kwargs: Any):
        kwargs.setdefault("num_gpus", 1)  # a logical slot for SkyRL's num_gpus=1 actors
        kwargs.setdefault("num_cpus", int(os.environ.get("BANDPO_SKYRL_RAY_CPUS", "8")))
        return real_init(*args, **kwargs)

    init._bandpo_cpu_fixture = True
    ray.init = init


def install_cpu_patches() -> None:
    """The process-level patches listed in the module docstring (idempotent)."""
    _import_model_wrapper_with_flash_attn_stand_in()
    _install_torch_cuda_stand_ins()
    _install_fsdp_utils_patches()
    _install_driver_ray_gpu()


install_cpu_patches()

# SkyRL's modules, imported after the stand-ins they need
from skyrl.backends.skyrl_train.inference_servers.base import InferenceEngineInterface  # noqa: E402
from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import FSDPPolicyWorkerBase  # noqa: E402
from skyrl.train.entrypoints.main_base import BasePPOExp  # noqa: E402
from skyrl.train.trainer import RayPPOTrainer  # noqa: E402
from skyrl.train.utils.tracking import Tracking  # noqa: E402
from skyrl_gym.envs import register as register_env  # noqa: E402
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput  # noqa: E402

# --- the environment ------------------------------------------------------------------------------------------


class ByteMeanEnv(BaseTextEnv):
    """One-turn env whose reward is the mean byte value of the response / 255 (0 for an empty one)."""

    def __init__(self, env_config: Any = None, extras: dict[str, Any] | None = None) -> None:
        super().__init__()

    def step(self, action: str) -> BaseTextEnvStepOutput:
        data = action.encode("utf-8", errors="replace")
        reward = sum(data) / (255 * len(data)) if data else 0.0
        return BaseTextEnvStepOutput(observations=[], reward=reward, done=True, metadata={})


try:
    register_env(id=ENV_NAME, entry_point=f"{__name__}:ByteMeanEnv")
except Exception as error:  # already registered in this process
    if "already" not in str(error).lower():
        raise


# --- the rollout: Hugging Face sampling in a Ray actor --------------------------------------------------------


@ray.remote(num_cpus=0)
class HFRolloutActor:
    """Samples with the Hugging Face model in float32; receives the policy's weights after every update."""

    def __init__(self, model_path: str, tokenizer_path: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.weight_updates = 0

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> int:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"weight update mismatch: missing {missing}, unexpected {unexpected}")
        self.weight_updates += 1
        return self.weight_updates

    def get_weight_updates(self) -> int:
        return self.weight_updates

    @torch.no_grad()
    def generate(self, prompt_token_ids: list[list[int]], sampling_params: dict[str, Any]) -> dict[str, Any]:
        max_tokens = int(sampling_params.get("max_tokens") or 16)
        temperature = float(sampling_params.get("temperature", 1.0))
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        width = max(len(ids) for ids in prompt_token_ids)
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for ids in prompt_token_ids]
        )  # (B, P) left pad
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_token_ids])
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, width:]  # (B, N)
        logits = torch.stack(out.logits, dim=1).float() / temperature  # (B, N, V)
        logprobs = (
            torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        )  # (B, N)
        response_ids, response_logprobs, stop_reasons = [], [], []
        for tokens, token_logprobs in zip(new_tokens.tolist(), logprobs.tolist(), strict=True):
            length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            response_ids.append(tokens[:length])
            response_logprobs.append(token_logprobs[:length])
            stop_reasons.append("stop" if eos in tokens else "length")
        return {
            "responses": [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in response_ids],
            "response_ids": response_ids,
            "stop_reasons": stop_reasons,
            "response_logprobs": response_logprobs,
            "prompt_logprobs": None,
            "rollout_expert_indices": None,
        }


class HFRolloutClient(InferenceEngineInterface):
    """SkyRL's inference-client interface over `HFRolloutActor` (single-turn, token-in token-out)."""

    def __init__(self, model_path: str, tokenizer_path: str) -> None:
        self._model_path = model_path
        self.actor = HFRolloutActor.remote(model_path, tokenizer_path)
        self.weight_version = 0

    @property
    def model_name(self) -> str:
        return self._model_path

    async def generate(self, input_batch: dict[str, Any], model: str | None = None) -> dict[str, Any]:
        if input_batch.get("prompt_token_ids") is None:
            raise ValueError("the CPU rollout takes prompt_token_ids only (generator.batched=true)")
        return await self.actor.generate.remote(
            input_batch["prompt_token_ids"], input_batch["sampling_params"] or {}
        )

    async def load_state_dict(self, state: dict[str, torch.Tensor]) -> int:
        return await self.actor.load_state_dict.remote(state)

    def increment_weight_version(self) -> None:
        self.weight_version += 1

    def get_endpoint_url(self) -> str:
        raise NotImplementedError("the CPU rollout has no HTTP endpoint")

    async def chat_completion(self, request_payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError("the CPU rollout has no HTTP endpoint")

    async def render_chat_completion(self, request_payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError("the CPU rollout has no HTTP endpoint")

    async def completion(self, request_payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError("the CPU rollout has no HTTP endpoint")

    async def wake_up(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def sleep(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def init_weight_update_communicator(self, init_info: Any) -> None:
        return None

    async def update_named_weights(self, request: Any) -> None:
        raise NotImplementedError("the CPU policy worker sends whole state dicts (load_state_dict)")

    async def teardown(self) -> None:
        return None

    async def reset_prefix_cache(self, reset_running_requests: bool = False) -> None:
        return None

    async def pause_generation(self) -> None:
        return None

    async def resume_generation(self) -> None:
        return None

    async def finish_session(self, session_id: str) -> None:
        return None

    async def get_world_size(self) -> tuple[int, int]:
        return 1, 1


# --- the policy worker ----------------------------------------------------------------------------------------


class CpuPolicyWorkerBase(FSDPPolicyWorkerBase):
    """SkyRL's FSDP2 policy worker with gloo instead of NCCL and a whole-state-dict weight sync."""

    def init_worker_process_group(self) -> None:
        from skyrl.backends.skyrl_train.workers.worker import MeshRank

        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=600))
        dp_size = self._world_size // self.sequence_parallel_size
        self.device_mesh = torch.distributed.device_mesh.init_device_mesh(
            "cpu", mesh_shape=(dp_size, self.sequence_parallel_size), mesh_dim_names=("dp", "sp")
        )
        self.mesh_rank = MeshRank(
            dp=self.device_mesh.get_local_rank(mesh_dim="dp"),
            sp=self.device_mesh.get_local_rank(mesh_dim="sp"),
            tp=0,
            pp=0,
            world_size=self._world_size,
            dp_size=self.device_mesh.size(0),
            pp_size=1,
        )

    async def init_weight_sync_state(self, inference_engine_client: Any, inference_engine_cfg: Any) -> None:
        torch.distributed.barrier()

    async def broadcast_to_inference_engines(
        self, inference_engine_client: Any, inference_engine_cfg: Any, model_id: str | None = None
    ) -> None:
        state = self.model.model.state_dict()  # FSDP2: DTensor shards; full_tensor() gathers them
        full = {
            name: (value.full_tensor() if hasattr(value, "full_tensor") else value).detach().float().clone()
            for name, value in state.items()
        }
        if torch.distributed.get_rank() == 0:
            await inference_engine_client.load_state_dict(full)
        torch.distributed.barrier()


CpuPolicyWorker = ray.remote(num_gpus=1)(CpuPolicyWorkerBase)


# --- the experiment -------------------------------------------------------------------------------------------


class JsonlTracking(Tracking):
    """SkyRL's console tracker that also appends each step's metrics to $BANDPO_SKYRL_METRICS as a JSON line."""

    def log(self, data: dict[str, Any], step: int, commit: bool = False) -> None:
        super().log(data, step, commit)
        path = Path(os.environ["BANDPO_SKYRL_METRICS"])
        scalars = {key: value for key, value in data.items() if isinstance(value, int | float)}
        with path.open("a") as handle:
            handle.write(json.dumps({"step": step, "data": scalars}) + "\n")


class CpuTrainer(RayPPOTrainer):
    def build_models(self, *worker_classes: Any) -> None:
        from skyrl.backends.skyrl_train.workers.fsdp.fsdp_worker import CriticWorker, RefWorker

        super().build_models(CpuPolicyWorker, CriticWorker, RefWorker)


class CpuPPOExp(BasePPOExp):
    def get_inference_client(self) -> HFRolloutClient:
        return HFRolloutClient(self.cfg.trainer.policy.model.path, os.environ["BANDPO_SKYRL_TOKENIZER"])

    def get_tracker(self) -> JsonlTracking:
        return JsonlTracking(
            project_name=self.cfg.trainer.project_name,
            experiment_name=self.cfg.trainer.run_name,
            backend="console",
            config=self.cfg,
        )

    def get_trainer(self, *args: Any, **kwargs: Any) -> CpuTrainer:
        return CpuTrainer(*args, **kwargs)


@ray.remote(num_cpus=1)
def cpu_entrypoint(cfg: Any) -> int:
    """SkyRL's `skyrl_entrypoint` with `CpuPPOExp`; returns the rollout's count of weight updates."""
    exp = CpuPPOExp(cfg)
    exp.run()
    client = exp.trainer.inference_engine_client
    return ray.get(client.actor.get_weight_updates.remote())
