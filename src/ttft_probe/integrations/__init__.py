"""Probe the agents that products drive through an SDK, in the SDK's own process.

Each module wraps one SDK's launch of its agent so that every turn becomes a record, with
no wrapper process in between. They import their SDK, so each needs its optional extra
(``pip install 'ttft-probe[claude-agent-sdk]'`` …) and is imported only when you use it:

=============================================  ============================================
module                                         what it probes
=============================================  ============================================
:mod:`ttft_probe.integrations.claude_agent_sdk`  ``ClaudeSDKClient`` / ``query()``: Claude
                                               Code in SDK mode, one record per message
:mod:`ttft_probe.integrations.openai_codex`      ``Codex`` / ``AsyncCodex``: ``codex
                                               app-server``, one record per turn
:mod:`ttft_probe.integrations.acp`               ``spawn_agent_process`` of the
                                               ``agent-client-protocol`` SDK: any ACP agent
=============================================  ============================================

SDKs in other languages (the TypeScript Claude Agent SDK's ``pathToClaudeCodeExecutable``,
an ACP client's command) take an executable instead: ``ttft-probe shim`` writes one that
runs the agent under ``ttft-probe run``.
"""
