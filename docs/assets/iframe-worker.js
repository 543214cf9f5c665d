// Search on pages opened from disk. The theme's search runs in a Web Worker, and browsers refuse to
// start a Worker from a file:// address. Served over HTTP this file does nothing; from disk it replaces
// Worker with a stand-in that runs the worker's script in a hidden same-origin frame and passes the
// messages both ways. (The offline plugin would otherwise load such a stand-in from a CDN, which an
// offline reader cannot reach; the plugin skips it when a polyfill's name contains "iframe-worker".)
(function () {
  if (location.protocol !== "file:") return;

  class FrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.pending = [];
      this.frame = document.createElement("iframe");
      this.frame.style.display = "none";
      document.documentElement.appendChild(this.frame);
      const scope = this.frame.contentWindow;
      // What the worker posts comes out here, as a real worker's messages would.
      scope.postMessage = (data) => {
        const event = new MessageEvent("message", { data: data });
        this.dispatchEvent(event);
        if (typeof this.onmessage === "function") this.onmessage(event);
      };
      const script = scope.document.createElement("script");
      script.src = new URL(url, location.href).href;
      script.onload = () => {
        this.scope = scope;
        this.pending.splice(0).forEach((data) => this.postMessage(data));
      };
      scope.document.head.appendChild(script);
    }

    postMessage(data) {
      if (!this.scope) { this.pending.push(data); return; }
      this.scope.dispatchEvent(new this.scope.MessageEvent("message", { data: data }));
    }

    terminate() { this.frame.remove(); }
  }

  window.Worker = FrameWorker;
})();
