"""gptlib: the library the course's notebooks derive, one module per idea.

Each module belongs to the chapter that builds it, and imports only from earlier ones:

==========================  =======  ==========================================================
module                      chapter  what it holds
==========================  =======  ==========================================================
``gptlib.data``             01       the corpus (download, checksum, cache), CharTokenizer,
                                     train/val split, get_batch; where each play starts
``gptlib.bigram``           02       the bigram model, by counting and as a network
``gptlib.attention``        03-04    averaging the past, causal mask, scaled scores, Head,
                                     MultiHeadAttention, AttentionLM
``gptlib.positional``       05       learned, sinusoidal and rotary positions
``gptlib.model``            06       GPTConfig, FeedForward, Block, GPT, KVCache (used in 08)
``gptlib.train``            07       TrainConfig, AdamW groups, the schedule, the loop
                                     (train, training_step, TrainState), estimates, full_loss
``gptlib.runtime``          07       device, precision, torch.compile, several GPUs (DDP),
                                     wrapped around the loop; a step's memory
``gptlib.checkpoint``       07       one safetensors file per run, atomic, no pickle
``gptlib.presets``          07       the named recipes: cpu, classic-cpu, laptop, gpu
``gptlib.sample``           08       temperature, top-k, top-p, streaming, the KV cache's window
``gptlib.evaluate``         09       the loss of every prediction; nats, bits per character,
                                     perplexity; loss by position, by character, by play
``gptlib.numpy_gpt``        10       the GPT in NumPy alone: every forward and backward by
                                     hand, NumpyGPT, AdamW, clipping (no torch imported)
``gptlib.tokenizers``       11       a word tokenizer; byte-level BPE (train, encode, decode,
                                     special tokens, a readable file); GPT-2's tokenizer from
                                     OpenAI's files; sliding windows; a corpus in any tokens
``gptlib.pretrained``       12       GPT-2 checkpoints in the Hugging Face format, in and out;
                                     GPT.from_pretrained
``gptlib.finetune``         13       the which-play and replies tasks cut from the corpus;
                                     a classifier on the last real token; LoRA and its
                                     merge; probe, last block, LoRA, scratch; masked reply
                                     loss; baselines; adapter files
``gptlib.viz``              all      heatmaps, the live loss plot, the interactive explorers,
                                     a passage coloured by loss
``gptlib.diagrams``         03-08    pictures drawn from the library's own models: attention's
                                     shapes, RoPE, the GPT and its parameters, the KV cache
``gptlib.exercises``        all      the self-checking exercises' check()
``gptlib.answers``          all      what each check expects, with its hint and why (spoilers)
``gptlib.cli``              -        python -m gptlib train | sample | eval | export | presets |
                                     finetune | classify
==========================  =======  ==========================================================
"""
