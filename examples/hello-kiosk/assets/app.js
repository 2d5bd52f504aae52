// Confirms health to the lanseed device agent when it serves this page.
// Outside lanseed (opened as a file) there is no window.lanseed: do nothing.
if (window.lanseed && typeof window.lanseed.notifyAppReady === 'function') {
  window.lanseed.notifyAppReady();
}
