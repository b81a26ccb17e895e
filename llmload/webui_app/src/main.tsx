import LocustUi, { baseTabs, ITab, locustStore } from 'locust-ui';
import { createRoot } from 'react-dom/client';

import Cockpit from './Cockpit';
import { sendPostOnlyRoutesAsPost } from './locustCompat';

sendPostOnlyRoutesAsPost();

// Locust's own page (locust-ui), with the LLM cockpit as the second tab. The swarm state Locust's
// store starts from is the server's template args: the LLM table tab, its columns and the
// download links llmload declares there stay as they are.
const { swarm } = locustStore.getState();
const declaredTabs = (swarm.extendedTabs || []) as ITab[];
const cockpitTab: ITab = { key: 'llm-cockpit', title: 'LLM cockpit', component: Cockpit };
const tabs: ITab[] = [baseTabs[0], cockpitTab, ...declaredTabs, ...baseTabs.slice(1)];

createRoot(document.getElementById('root')!).render(
  <LocustUi tabs={tabs} extendedTables={swarm.extendedTables} extendedReports={swarm.extendedCsvFiles} />,
);
