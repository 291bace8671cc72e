"""The switch simulator: a TCP Event Socket server that behaves like FreeSWITCH 1.10.12.

It backs every integration test and the bridge's sandbox mode. Modules, one job each:

- `server`     the ESL listener (auth, api/bgapi, subscriptions, filters) and `SwitchSimulator`
- `core`       the switch without the socket: channels, event bus, scenario knobs, tasks
- `channels`   the channel model and the events its state changes fire
- `events`     event headers and serialization, modelled on /work/shared/esl-captures
- `commands`   the API commands and their reply texts
- `apps`       dialplan applications and the channel's own task that runs them
- `dialplan`   the lab XML dialplan and inline dialplans
- `originate`  outbound legs and the simulated far end
- `conference` mod_conference: rooms, members, conference::maintenance
- `callcenter` enough of mod_callcenter for transfers to a queue
- `audio_fork` mod_audio_fork over a real WebSocket client
- `arguments`  switch_separate_string and the small grammars built on it
"""
