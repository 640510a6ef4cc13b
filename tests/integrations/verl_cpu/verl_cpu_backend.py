"""Test fixture: run stock verl 0.9.1's `main_ppo` on a CPU (never part of the bandpo package).

verl loads this module in every process through its own hook, `VERL_USE_EXTERNAL_MODULES=verl_cpu_backend`
(imported inside `import verl`, before verl's trainer and worker modules). It adds, through verl's registries:

- a CPU platform (`PlatformRegistry`, selected with `VERL_PLATFORM=cpu`): torch on CPU, gloo collectives, and
  Ray's logical "GPU" resource so that verl's resource pools can be built (`ray_init.num_gpus`);
- a rollout backend named `hf_cpu` (`RolloutReplicaRegistry` for the server side, verl's rollout-class table
  for the trainer side): a Ray actor that samples with the Hugging Face model in float32 and returns the
  sampled tokens' log-probs; it receives every update's weights through verl's `naive` weight sync.

Everything else is verl's own code path. The one patch is marked PATCH below with the verl function it works
around. What the launch command must set besides (`VERL_ENGINE_DEVICE=cuda`, sdpa attention, fsdp2, ...) is
listed in `tests/integrations/test_verl_e2e_on_cpu.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import ray
import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry

PLATFORM_NAME = "cpu"
ROLLOUT_NAME = "hf_cpu"


def _server_name(replica_rank: int) -> str:
    return f"verl_cpu_hf_server_{replica_rank}"


# ---------------------------------------------------------------------------------------------------------------
# Platform
# ---------------------------------------------------------------------------------------------------------------


class _CpuDeviceModule(ModuleType):
    """`torch.<device>` stand-in: `torch.cpu` where it has the function, else a no-op returning 0.

    verl calls accelerator functions (`empty_cache`, `memory_allocated`, `manual_seed`, `set_device`, ...)
    through `get_torch_device()`; on a CPU they have nothing to do.
    """

    def __init__(self) -> None:
        super().__init__("verl_cpu_device")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # keep Python's protocols (e.g. abc's __isabstractmethod__) honest
            raise AttributeError(name)
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        if name == "mem_get_info":
            return lambda *args, **kwargs: (0, 0)

        def _noop(*args: Any, **kwargs: Any) -> int:
            return 0

        return _noop

    def current_device(self) -> torch.device:
        return torch.device("cpu")

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def get_device_name(self, device: Any = None) -> str:  # verl/utils/flops_counter.py looks "CPU" up
        return "CPU"


_CPU_DEVICE_MODULE = _CpuDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """torch on CPU with gloo; Ray's "GPU" resource stands for a CPU worker slot (nothing uses CUDA)."""

    device_name = "cpu"
    vendor_name = "cpu"
    device_module = _CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return True

    def current_device(self) -> torch.device:  # FSDP2 wants a device, not an accelerator index
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    @contextlib.contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def cudart(self) -> None:
        return None


def _patch_process_group_backend() -> None:
    # PATCH verl/utils/distributed.py `initialize_global_process_group_ray`: its default backend is
    # f"cpu:gloo,{device}:{backend}", which on a CPU platform reads "cpu:gloo,cpu:gloo" and torch refuses
    # ("Duplicate device type cpu"); no setting overrides it. Only the default changes: plain "gloo".
    import verl.utils.distributed as distributed

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_verl_cpu_patched", False):
        return

    def initialize_global_process_group_ray(timeout_second: Any = None, backend: Any = None) -> Any:
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray._verl_cpu_patched = True  # type: ignore[attr-defined]
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray


# ---------------------------------------------------------------------------------------------------------------
# Rollout: a Ray actor sampling with the HF model (server side) + the trainer-side weight sender
# ---------------------------------------------------------------------------------------------------------------


class HFCpuServer:
    """Token-in/token-out sampler with the HF causal LM in float32 (the role vLLM's server plays).

    `generate` is verl's server contract (`LLMServerClient.generate` calls it); the other methods are the
    control calls that `RolloutReplica` and verl's checkpoint manager make (no-ops on a CPU).
    """

    def __init__(self, model_path: str, seed: int, response_length: int, eos_token_ids: list[int]) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="sdpa"
        ).eval()
        self.generator = torch.Generator().manual_seed(seed)
        self.response_length = response_length
        self.eos_token_ids = set(eos_token_ids)
        # verl reads every output's global_steps (v1/trainer_base.py `_compute_metrics`); each weight sync sets
        # it, and verl syncs before the first rollout
        self.global_steps: int | None = None
        self.weight_updates = 0
        self.lock = asyncio.Lock()

    def load_weights(self, state: dict[str, torch.Tensor], global_steps: int | None) -> int:
        """Load one update's full weights (names as in the HF state dict); returns the update count."""
        result = self.model.load_state_dict(state, strict=False)
        tied = {name for name in result.missing_keys if name.endswith("lm_head.weight")}
        if result.unexpected_keys or set(result.missing_keys) - tied:
            raise RuntimeError(
                f"weight sync: unexpected {result.unexpected_keys}, missing {result.missing_keys}"
            )
        self.global_steps = global_steps
        self.weight_updates += 1
        return self.weight_updates

    @torch.no_grad()
    def _sample(
        self, prompt_ids: list[int], sampling_params: dict[str, Any]
    ) -> tuple[list[int], list[float]]:
        temperature = float(sampling_params.get("temperature", 1.0))
        max_tokens = int(sampling_params.get("max_tokens", self.response_length))
        if (
            sampling_params.get("top_k", -1) not in (-1, 0, None)
            or float(sampling_params.get("top_p", 1)) < 1
        ):
            raise ValueError("hf_cpu rollout samples from the full distribution: set top_k=-1, top_p=1")
        input_ids = torch.tensor([prompt_ids])  # (1, T)
        past = None
        tokens: list[int] = []
        logps: list[float] = []
        for _ in range(max_tokens):
            out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float()  # (V,)
            if temperature > 0:
                logp = torch.log_softmax(logits / temperature, dim=-1)  # vLLM's processed log-probs
                token = int(torch.multinomial(logp.exp(), 1, generator=self.generator))
            else:
                logp = torch.log_softmax(logits, dim=-1)
                token = int(logits.argmax())
            tokens.append(token)
            logps.append(float(logp[token]))
            if token in self.eos_token_ids:
                break
            input_ids = torch.tensor([[token]])
        return tokens, logps

    async def generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **kwargs: Any
    ) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        async with self.lock:
            tokens, logps = self._sample(list(prompt_ids), dict(sampling_params))
        return TokenOutput(
            token_ids=tokens,
            log_probs=logps if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def stats(self) -> dict[str, Any]:
        return {"weight_updates": self.weight_updates, "global_steps": self.global_steps}

    async def wake_up(self) -> None: ...
    async def sleep(self) -> None: ...
    async def abort_all_requests(self, reject_request: bool = False) -> None: ...
    async def resume_generation(self) -> None: ...
    async def clear_kv_cache(self) -> None: ...
    async def release_kv_cache(self) -> None: ...
    async def resume_kv_cache(self) -> None: ...
    async def start_profile(self, **kwargs: Any) -> None: ...
    async def stop_profile(self) -> None: ...


class HFCpuReplica(RolloutReplica):
    """One `HFCpuServer` per replica; verl's agent loop sends it token-in/token-out requests."""

    async def launch_servers(self) -> None:
        from transformers import AutoTokenizer

        model = self.model_config  # the trainer's DictConfig (no `local_path`: the test's paths are local)
        model_path = model.get("local_path") or model.path
        tokenizer = AutoTokenizer.from_pretrained(model.get("tokenizer_path") or model_path)
        server = (
            ray.remote(HFCpuServer)
            .options(name=_server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(model_path, self.config.seed, self.config.response_length, [tokenizer.eos_token_id])
        )
        await server.stats.remote()  # wait for the model to load
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}://replica-{self.replica_rank}"


class HFCpuRollout(BaseRollout):
    """Trainer-side end of verl's `naive` weight sync: forwards each update's full weights to the server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, model_config, device_mesh)
        world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank = rank // world_size
        self.is_leader = rank % world_size == 0

    async def resume(self, tags: list[str]) -> None:
        pass

    async def release(self) -> None:
        pass

    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"hf_cpu rollout takes full named tensors, got wire_format={wire_format!r}")
        state = {}
        for name, tensor in weights:
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor  # FSDP2 DTensor
            state[name] = full.detach().to("cpu", torch.float32).clone()
        if self.is_leader:
            server = ray.get_actor(_server_name(self.replica_rank))
            await server.load_weights.remote(state, kwargs.get("global_steps"))


def _register_rollout() -> None:
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFCpuReplica)
    # verl/workers/rollout/base.py keeps its trainer-side rollout classes in this table (no register function)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFCpuRollout"


_patch_process_group_backend()
_register_rollout()

__all__ = ["PLATFORM_NAME", "ROLLOUT_NAME", "HFCpuReplica", "HFCpuRollout", "HFCpuServer", "PlatformCPU"]
