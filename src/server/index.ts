/** `persona-vectors/server`: the OpenAI-compatible server as a library, and a client for it. */
export { startServer, type RunningServer } from "./server.js";
export { loadServerConfig, parseServerConfig, type ServerConfig, type ServerConfigInput } from "./config.js";
export { RemoteConversation, type RemoteOptions, type RemoteReply } from "./client.js";
export type { PersonaReport, TraitReport } from "./persona.js";
