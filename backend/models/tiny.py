"""Randomly initialised miniature models saved in the real on-disk formats, so tests (and
`models: "tiny"` jobs) run the real loading code with no download.

`build_tiny(out_dir)` writes one folder per role, <out_dir>/<role> (roles: BUILDERS; the
store reads each with its real loader). Each folder has the layout of the role's hub
repository as published (layouts.py): the same subfolders, file names and config classes,
so a tiny folder served under the real id is what a download of the real one gives.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

TINY_VERSION = 3  # bump when a builder changes, so cached folders are rebuilt


def tiny_tokenizer(out_dir: Path, fast_file: bool = False) -> None:
    """A byte-level BPE CLIP tokenizer with every single byte (and its end-of-word form) in
    the vocabulary, so any text tokenises. Written as the CLIP repositories publish it:
    vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json, and with
    fast_file the tokenizers library's tokenizer.json too (Stable Diffusion's and CLIPSeg's
    repositories have none; PickScore's and OpenAI CLIP's have one)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    merges = [("t", "h"), ("h", "e</w>"), ("a", "n"), ("i", "n"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(out_dir)
    if not fast_file:
        (out_dir / "tokenizer.json").unlink()
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def tiny_feature_extractor(out_dir: Path, size: int) -> None:
    """feature_extractor/preprocessor_config.json, as the pipelines publish it (the loaders
    do their own CLIP preprocessing and never read it)."""
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out_dir)


def tiny_text_encoder(out_dir: Path, vocab_size: int, hidden: int = 32) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                         projection_dim=hidden, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1)
    CLIPTextModel(cfg).save_pretrained(out_dir)


def tiny_unet(out_dir: Path, in_channels: int = 4, cross_dim: int = 32, class_embed_dim: int | None = None) -> None:
    """class_embed_dim: unCLIP's projected class embedding input (image embeds + noise level)."""
    from diffusers import UNet2DConditionModel

    extra = ({"class_embed_type": "projection", "projection_class_embeddings_input_dim": class_embed_dim}
             if class_embed_dim else {})
    UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_dim,
        attention_head_dim=8, norm_num_groups=16, **extra,
    ).save_pretrained(out_dir)


def tiny_vae(out_dir: Path) -> None:
    from diffusers import AutoencoderKL

    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=16, sample_size=32).save_pretrained(out_dir)


def tiny_taesd(out_dir: Path) -> None:
    """AutoencoderTiny with tiny_vae's 2x latent stride (one upsampling in the decoder)."""
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
                    num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)).save_pretrained(out_dir)


def tiny_scheduler(out_dir: Path, prediction_type: str = "epsilon", cls: str = "DDIMScheduler") -> None:
    """Stable Diffusion's noise schedule as its repositories write it: scheduler_config.json
    naming `cls` (PNDMScheduler in Stable Diffusion's), clip_sample false (the loaders read
    any of them into DDIM)."""
    cfg = {"_class_name": cls, "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
           "prediction_type": prediction_type, "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None,
           **({"skip_prk_steps": True} if cls == "PNDMScheduler" else {})}
    _write_json(out_dir / "scheduler_config.json", cfg)


def tiny_stable_diffusion(out_dir: Path, prediction_type: str = "epsilon",
                          pipeline: str = "StableDiffusionPipeline") -> None:
    """A diffusers Stable Diffusion folder: tokenizer, text_encoder, unet, vae, scheduler,
    feature_extractor and model_index.json (the safety checker's weights are left out: no
    loader reads them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(out_dir / "tokenizer")
    from transformers import CLIPTokenizer

    vocab_size = len(CLIPTokenizer.from_pretrained(out_dir / "tokenizer"))
    tiny_text_encoder(out_dir / "text_encoder", vocab_size)
    tiny_unet(out_dir / "unet")
    tiny_vae(out_dir / "vae")
    tiny_scheduler(out_dir / "scheduler", prediction_type, "PNDMScheduler")
    tiny_feature_extractor(out_dir / "feature_extractor", 32)
    _write_json(out_dir / "model_index.json", {
        "_class_name": pipeline, "_diffusers_version": "0.42.1",
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"],
        **({"safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "requires_safety_checker": True}
           if pipeline == "StableDiffusionPipeline" else {})})


def tiny_unclip(out_dir: Path, embed_dim: int = 32) -> None:
    """Stable unCLIP folder: SD parts + v-prediction, a UNet with a projected class
    embedding (image embeds ++ noise-level embedding), image_normalizer,
    image_noising_scheduler and the CLIP image tower in image_encoder/."""
    from diffusers import DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    tiny_stable_diffusion(out_dir, prediction_type="v_prediction", pipeline="StableUnCLIPImg2ImgPipeline")
    tiny_unet(out_dir / "unet", class_embed_dim=2 * embed_dim)
    StableUnCLIPImageNormalizer(embedding_dim=embed_dim).save_pretrained(out_dir / "image_normalizer")
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(out_dir / "image_noising_scheduler")
    tiny_clip_vision(out_dir / "image_encoder", embed_dim)
    index = json.loads((out_dir / "model_index.json").read_text())
    index.update({"image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
                  "image_normalizer": ["stable_diffusion", "StableUnCLIPImageNormalizer"],
                  "image_noising_scheduler": ["diffusers", "DDPMScheduler"]})
    _write_json(out_dir / "model_index.json", index)


def tiny_clip_vision(out_dir: Path, embed_dim: int = 32) -> None:
    """CLIPVisionModelWithProjection (the unCLIP / OpenCLIP image tower's transformers form)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=embed_dim)
    CLIPVisionModelWithProjection(cfg).save_pretrained(out_dir)


def tiny_clip(out_dir: Path) -> None:
    """The "clip" role: the image tower where it is published, unCLIP's image_encoder/."""
    tiny_clip_vision(out_dir / "image_encoder")


def tiny_zero123(out_dir: Path) -> None:
    """Diffusers-format Zero-1-to-3 (zero123-xl-diffusers' layout): 8-channel UNet, VAE, CLIP
    image encoder and the camera projection in clip_camera_projection/."""
    from .zero123_parts import CLIPCameraProjection

    out_dir.mkdir(parents=True, exist_ok=True)
    embed = 32  # the image embedding = the UNet's cross-attention width (768 at full size)
    tiny_unet(out_dir / "unet", in_channels=8, cross_dim=embed)
    tiny_vae(out_dir / "vae")
    tiny_clip_vision(out_dir / "image_encoder", embed_dim=embed)
    tiny_scheduler(out_dir / "scheduler")
    tiny_feature_extractor(out_dir / "feature_extractor", 32)
    CLIPCameraProjection(embedding_dim=embed, additional_embeddings=4).save_pretrained(
        out_dir / "clip_camera_projection")
    _write_json(out_dir / "model_index.json", {
        "_class_name": "Zero123Pipeline", "_diffusers_version": "0.42.1",
        "clip_camera_projection": ["zero123", "CLIPCameraProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]})


def tiny_ip_adapter(out_dir: Path, sd_dir: Path | None = None, embed_dim: int = 24) -> None:
    """IP-Adapter (h94/IP-Adapter's SD 1.5 layout): models/ip-adapter_sd15.safetensors with
    image_proj.* and ip_adapter.<k>.to_{k,v}_ip.weight for the k-th cross-attention layer
    (k = 1, 3, 5, ... in attn_processors order), plus models/image_encoder/."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    sd_dir = sd_dir or out_dir.parent / "sd"
    if not (sd_dir / "unet").exists():
        tiny_stable_diffusion(sd_dir)
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet")
    cross, channels = unet.config.cross_attention_dim, list(unet.config.block_out_channels)
    tensors = {"image_proj.proj.weight": torch.randn(4 * cross, embed_dim) * 0.02,
               "image_proj.proj.bias": torch.zeros(4 * cross),
               "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = channels[::-1][int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        for kv in ("k", "v"):
            tensors[f"ip_adapter.{key}.to_{kv}_ip.weight"] = torch.randn(hidden, cross) * 0.05
        key += 2
    models = out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(models / "ip-adapter_sd15.safetensors"))
    tiny_clip_vision(models / "image_encoder", embed_dim=embed_dim)


def tiny_imagebind(out_dir: Path, out_dim: int = 32) -> None:
    """ImageBind checkpoint layout (imagebind_huge.pth + config.json) at toy width, with the
    byte-level tokenizer in tokenizer/ (the files of openai/clip-vit-large-patch14, where the
    default role reads it). out_dim matches the tiny CLIP towers' embeddings."""
    from transformers import CLIPTokenizer

    from .imagebind import CHECKPOINT, ImageBind, ImageBindConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    tiny_tokenizer(out_dir / "tokenizer", fast_file=True)
    vocab = len(CLIPTokenizer.from_pretrained(out_dir / "tokenizer"))
    cfg = ImageBindConfig(out_dim=out_dim, vision=(32, 2, 4), text=(32, 2, 4), audio=(32, 2, 4), depth=(16, 1, 4),
                          thermal=(16, 1, 4), imu=(16, 1, 4), vocab_size=vocab, image_size=28)
    torch.save(ImageBind(cfg).state_dict(), out_dir / CHECKPOINT)
    cfg.save(out_dir)


def _tiny_clip_parts(vocab_size: int) -> tuple[dict, dict]:
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
                  patch_size=8)
    return text, vision


def tiny_dino(out_dir: Path) -> None:
    """DINO ViT (transformers ViTModel, the facebook/dino-* layout)."""
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                    patch_size=8)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(out_dir)


def tiny_depth(out_dir: Path) -> None:
    """DPT depth estimator (DPTForDepthEstimation, non-hybrid)."""
    from transformers import DPTConfig, DPTForDepthEstimation

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=32,
                    patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                    fusion_hidden_size=16, is_hybrid=False)
    DPTForDepthEstimation(cfg).save_pretrained(out_dir)


def tiny_reward(out_dir: Path) -> None:
    """CLIP preference model (PickScore layout: CLIPModel) with its tokenizer in the folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tiny_tokenizer(out_dir, fast_file=True)
    text, vision = _tiny_clip_parts(len(CLIPTokenizer.from_pretrained(out_dir)))
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(out_dir)


def tiny_segmenter(out_dir: Path) -> None:
    """CLIPSeg (CLIPSegForImageSegmentation) with its tokenizer in the folder, as published:
    weights as pytorch_model.bin, no tokenizer.json."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    tiny_tokenizer(out_dir)
    text, vision = _tiny_clip_parts(len(CLIPTokenizer.from_pretrained(out_dir)))
    cfg = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=32, reduce_dim=16, extract_layers=[1, 2],
                        decoder_num_attention_heads=4, decoder_intermediate_size=32)
    model = CLIPSegForImageSegmentation(cfg)
    model.save_pretrained(out_dir)
    (out_dir / "model.safetensors").unlink()  # transformers 5 saves only safetensors; the repository has a pickle
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")


BUILDERS = {"imagebind": tiny_imagebind, "sd": tiny_stable_diffusion, "unclip": tiny_unclip, "clip": tiny_clip,
            "zero123": tiny_zero123, "ip_adapter": tiny_ip_adapter, "dino": tiny_dino, "depth": tiny_depth,
            "reward": tiny_reward, "segmenter": tiny_segmenter, "taesd": tiny_taesd}


def build_tiny(out_dir: str | Path, roles: list[str] | None = None, seed: int = 0) -> Path:
    """Write tiny models for the given roles (all by default) under out_dir/<role>."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for role in roles or list(BUILDERS):
        BUILDERS[role](out / role)
    (out / "tiny.json").write_text(json.dumps({"version": TINY_VERSION, "roles": sorted(roles or BUILDERS)}))
    return out


def build_tiny_role(root: str | Path, role: str) -> Path:
    """root/<role> built in a folder of its own and moved into place whole: a build that is
    killed leaves no half folder that would look built, and processes building the same
    role at once (two backends, parallel tests) each get a complete one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{role}-", dir=root))
    try:
        build_tiny(scratch, [role])
        try:
            (scratch / role).rename(root / role)
        except OSError:  # built meanwhile by another process
            if not (root / role).is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root / role

