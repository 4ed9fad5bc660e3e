// Press-and-hold: an action that needs a deliberate gesture. The button fills for HOLD_MS while
// pressed (pointer, or Space/Enter held); letting go early cancels. Vibrates when it fires.

export const HOLD_MS = 1000;

export function holdButton(button: HTMLButtonElement, onHeld: () => void): void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const start = (e: Event) => {
    if (timer || button.disabled) return;
    e.preventDefault();
    button.classList.add("holding");
    button.style.setProperty("--hold-ms", `${HOLD_MS}ms`);
    timer = setTimeout(() => {
      timer = null;
      button.classList.remove("holding");
      navigator.vibrate?.(60);
      onHeld();
    }, HOLD_MS);
  };
  const cancel = () => {
    if (!timer) return;
    clearTimeout(timer);
    timer = null;
    button.classList.remove("holding");
  };
  button.addEventListener("pointerdown", start);
  button.addEventListener("pointerup", cancel);
  button.addEventListener("pointerleave", cancel);
  button.addEventListener("pointercancel", cancel);
  button.addEventListener("contextmenu", (e) => e.preventDefault());
  button.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat) start(e);
    else if (e.key === " " || e.key === "Enter") e.preventDefault();
  });
  button.addEventListener("keyup", (e) => {
    if (e.key === " " || e.key === "Enter") cancel();
  });
  button.addEventListener("blur", cancel);
}
